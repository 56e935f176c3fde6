//! The bridge-certificate grant (`urn:agentauth:params:grant-type:bridge-cert`,
//! issue 16): an agent, authenticated as itself (private_key_jwt, or a
//! workload assertion of a trusted issuer), proves it holds an Ed25519 key
//! and gets a certificate for it, minutes long, from the epoch CA.
//!
//! Proof of possession, either:
//! - `csr`: a PKCS#10 request (PEM or base64url DER) signed by the key,
//!   whose challengePassword is a server nonce (`POST /bridge-certs/nonce`);
//! - a DPoP proof made with the key (RFC 9449), whose `nonce` claim is a
//!   server nonce; without one the answer is `use_dpop_nonce` with a fresh
//!   nonce in `DPoP-Nonce` (§8).
//!
//! Both together must name the same key. Each nonce is spent once. The
//! response (RFC 8693 §2.2.1 shape): `access_token` is the PEM chain, leaf
//! then CA; `issued_token_type` names it; `token_type` is `N_A`.

use serde_json::json;

use super::Env;
use super::agent::agent_of;
use super::{Grant, GrantFuture, SelfAuthFuture, TokenRequest, TokenResponse, requested_scope};
use crate::agents::bridge::cert::{self, Ed25519Public, Subject};
use crate::agents::bridge::{BridgeError, csr};
use crate::error::{Error, OAuthError};
use crate::oauth::client_metadata::{AuthMethod, ClientMetadata};
use crate::oauth::form::OAuthForm;
use crate::oauth::grant_type::{BRIDGE_CERT, CERT_CHAIN_TOKEN_TYPE};
use crate::oauth::scope::Scope;
use crate::store::StoreError;
use crate::store::audit::AuditEvent;

pub struct BridgeCert;

impl Grant for BridgeCert {
    fn grant_type(&self) -> &'static str {
        BRIDGE_CERT
    }

    fn for_agents(&self) -> bool {
        true
    }

    fn check_client(&self, metadata: &ClientMetadata) -> Result<(), String> {
        if metadata.token_endpoint_auth_method != AuthMethod::PrivateKeyJwt {
            return Err("the bridge-cert grant is for agents (private_key_jwt)".into());
        }
        Ok(())
    }

    /// A workload assertion (`assertion`) may authenticate the agent, as
    /// at the JWT bearer grant.
    fn authenticate_itself<'a>(
        &'a self,
        cx: &'a Env<'a>,
        params: &'a OAuthForm,
    ) -> Option<SelfAuthFuture<'a>> {
        super::jwt_bearer::workload_client(params)
            .then(|| Box::pin(super::jwt_bearer::assertion_client(cx, params)) as _)
    }

    /// The proof's `nonce` is a single-use bridge nonce, checked here.
    fn checks_dpop_nonce(&self) -> bool {
        true
    }

    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(cx, request))
    }
}

impl From<BridgeError> for Error {
    fn from(e: BridgeError) -> Self {
        match e {
            BridgeError::BadRequest(why) => OAuthError::invalid_request(why).into(),
            BridgeError::Internal(why) => Error::Internal(why),
        }
    }
}

/// The key a DPoP proof was made with, when it is Ed25519.
fn proof_key(req: &TokenRequest<'_>) -> Result<Option<Ed25519Public>, OAuthError> {
    let Some(proof) = req.proof else {
        return Ok(None);
    };
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &proof.jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            let x =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &okp.x)
                    .ok()
                    .and_then(|x| <[u8; 32]>::try_from(x).ok())
                    .ok_or_else(|| OAuthError::invalid_dpop_proof("the DPoP key is malformed"))?;
            Ok(Some(Ed25519Public(x)))
        }
        _ => Ok(None),
    }
}

async fn run(cx: &Env<'_>, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let agent = agent_of(cx, &req).await?;
    // What the certificate is to say, checked before any single-use value
    // (the nonce, a workload assertion) is spent on a request that fails.
    let allowed = Scope::parse(&agent.scope).unwrap_or_default();
    let scope = requested_scope(req.params, &allowed)?;
    let code_signing = code_signing(req.params.get("certificate_usage"))?;

    // The key, and the nonce its holder signed.
    let dpop_key = proof_key(&req)?;
    let (key, nonce, by_csr) = match req.params.get("csr") {
        Some(text) => {
            let proven = csr::verify(&csr::decode(text)?)?;
            let key = Ed25519Public(proven.public_key);
            if req.proof.is_some() && dpop_key.as_ref().is_none_or(|k| k.0 != key.0) {
                return Err(OAuthError::invalid_request(
                    "the DPoP proof and the csr name different keys: a bridge certificate binds one key",
                )
                .into());
            }
            (key, proven.nonce, true)
        }
        None => match (dpop_key, req.proof) {
            (Some(key), Some(proof)) => (key, proof.nonce.clone(), false),
            (None, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "the DPoP proof's key must be Ed25519 to be certified",
                )
                .into());
            }
            _ => {
                return Err(OAuthError::invalid_request(
                    "prove possession of an Ed25519 key: send a csr, or a DPoP proof made with it",
                )
                .into());
            }
        },
    };
    spend_nonce(cx, nonce.as_deref(), by_csr, req.now).await?;
    // A federated agent's workload assertion is spent once, like the JWT
    // bearer grant's (it was verified when it authenticated the agent).
    if let Some(assertion) = req.assertion {
        super::jwt_bearer::spend(cx, &assertion.jti, assertion.spent_until).await?;
    }
    req.confirm_proof().await?;

    let cas = cx.agents.bridge.fresh(cx.db, req.now).await;
    let ca = cas
        .issuing()
        .ok_or_else(|| Error::Unavailable(StoreError::unavailable("no bridge CA is available")))?;
    let subject = Subject {
        issuer: &cx.config.issuer,
        agent_id: &agent.id,
        owner_id: &agent.owner_id,
        scopes: scope.iter().collect(),
        code_signing,
    };
    let issued = cert::issue(ca, &key, &subject, req.now, cx.config.bridge_cert_ttl)?;
    let jkt = key.jkt();
    crate::store::bridge::insert_cert(
        cx.db,
        crate::store::bridge::CertRow {
            serial: issued.serial_hex.clone(),
            agent_id: agent.id.clone(),
            jkt: jkt.clone(),
            x5t_s256: issued.x5t_s256.clone(),
            epoch: ca.epoch,
            issued_at: req.now,
            not_after: issued.not_after,
        },
    )
    .await?;
    // This node binds the key at once; others within a second.
    cx.agents
        .bind(
            &agent.id,
            &jkt,
            (issued.x5t_s256.clone(), req.now, issued.not_after),
        )
        .await;
    cx.metrics.token_issued(BRIDGE_CERT);
    cx.audit.record(AuditEvent {
        at: req.now,
        event: "bridge_cert.issued",
        client_id: Some(agent.id.clone()),
        subject: Some(agent.id.clone()),
        ip: req.ip.clone(),
        detail: json!({
            "serial": issued.serial_hex, "epoch": ca.epoch, "jkt": jkt,
            "x5t#S256": issued.x5t_s256, "not_after": issued.not_after,
            "scope": scope.to_string(), "code_signing": code_signing,
            "proof": if by_csr { "csr" } else { "dpop" },
        }),
    });
    let mut chain = crate::agents::bridge::ca::pem(&issued.der);
    chain.push_str(&ca.certificate_pem);
    Ok(TokenResponse {
        access_token: chain,
        issued_token_type: Some(CERT_CHAIN_TOKEN_TYPE),
        token_type: "N_A",
        expires_in: issued.not_after - req.now,
        scope: (!scope.is_empty()).then(|| scope.to_string()),
        refresh_token: None,
        authorization_details: None,
    })
}

/// `certificate_usage`: `clientAuth` (always granted) and optionally
/// `codeSigning`; whether code signing is asked for.
fn code_signing(usage: Option<&str>) -> Result<bool, OAuthError> {
    let Some(usage) = usage else {
        return Ok(false);
    };
    let mut code_signing = false;
    for u in usage.split(' ') {
        match u {
            "clientAuth" => {}
            "codeSigning" => code_signing = true,
            other => {
                return Err(OAuthError::invalid_request(format!(
                    "certificate_usage {other:?} is not one of clientAuth, codeSigning"
                )));
            }
        }
    }
    Ok(code_signing)
}

/// Checks and spends the server nonce a proof of possession signed. A
/// DPoP client without a usable one is told `use_dpop_nonce` with a fresh
/// nonce (RFC 9449 §8); a CSR client, `invalid_request`.
async fn spend_nonce(
    cx: &Env<'_>,
    nonce: Option<&str>,
    by_csr: bool,
    now: i64,
) -> Result<(), Error> {
    let refuse = |why: &str| -> Result<Error, Error> {
        if by_csr {
            Ok(OAuthError::invalid_request(format!(
                "{why}: put a nonce from POST /bridge-certs/nonce in the csr's challengePassword"
            ))
            .into())
        } else {
            let fresh = cx.agents.bridge_nonces.issue(now)?;
            Ok(OAuthError::use_dpop_nonce(fresh).into())
        }
    };
    let Some(nonce) = nonce else {
        return Err(refuse("the proof of possession carries no server nonce")?);
    };
    let Some(until) = cx.agents.bridge_nonces.check(nonce, now) else {
        return Err(refuse("the server nonce is unknown or expired")?);
    };
    if !cx
        .tokens
        .replay
        .spend_once(format!("bridge-nonce:{nonce}"), until)
        .await?
    {
        return Err(refuse("the server nonce was already used")?);
    }
    Ok(())
}
