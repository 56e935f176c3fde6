//! The grants of the token endpoint: one file each, and a closed dispatch
//! over `grant_type` that ends in `unsupported_grant_type`.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use serde::Serialize;
use serde_json::json;

use crate::app::State;
use crate::crypto::random_id;
use crate::error::{Error, OAuthError};
use crate::http::OAuthForm;
use crate::http::client_auth::AuthenticatedClient;
use crate::oauth::client_metadata::GrantType;
use agentauth_resource::dpop::VerifiedProof;
use agentauth_resource::claims::{ACCESS_TOKEN_TYP, AccessTokenClaims, Audience, Confirmation};
use crate::oauth::resource::ResourceUri;
use crate::oauth::scope::Scope;
use crate::store::audit::AuditEvent;

/// RFC 6749 §5.1 successful response.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// An access token and what its issuer must remember about it.
pub struct Issued {
    pub response: TokenResponse,
    pub jti: String,
    pub exp: i64,
}

impl TokenResponse {
    /// RFC 9449 §5: `DPoP` only when the token is bound, else `Bearer`.
    fn token_type(bound: bool) -> &'static str {
        if bound { "DPoP" } else { "Bearer" }
    }
}

/// `grant_type` values this server implements.
pub fn parse_grant_type(value: &str) -> Result<GrantType, OAuthError> {
    GrantType::SUPPORTED
        .into_iter()
        .find(|g| g.as_str() == value)
        .ok_or_else(|| {
            OAuthError::unsupported_grant_type(format!("grant_type {value:?} is not supported"))
        })
}

/// Runs the grant for an authenticated client.
pub async fn dispatch(
    state: &State,
    grant: GrantType,
    client: &AuthenticatedClient,
    form: &OAuthForm,
    proof: Option<&VerifiedProof>,
    ip: Option<String>,
) -> Result<TokenResponse, Error> {
    if !client.client.metadata.allows_grant(grant) {
        return Err(OAuthError::unauthorized_client(format!(
            "client is not registered for the {} grant",
            grant.as_str()
        ))
        .into());
    }
    match grant {
        GrantType::AuthorizationCode => {
            authorization_code::handle(state, client, form, proof, ip).await
        }
        GrantType::RefreshToken => refresh_token::handle(state, client, form, proof, ip).await,
        GrantType::ClientCredentials => {
            client_credentials::handle(state, client, form, proof, ip).await
        }
    }
}

/// RFC 8707 §2: every `resource` is an absolute URI without a fragment.
pub fn resources(form: &OAuthForm) -> Result<Vec<ResourceUri>, OAuthError> {
    form.get_all("resource")
        .map(|r| {
            ResourceUri::parse(r).map_err(|why| OAuthError::invalid_target(format!("{why}: {r:?}")))
        })
        .collect()
}

/// RFC 6749 §3.3: the requested scope, which must lie within `allowed`;
/// absent, the whole of `allowed`.
pub fn requested_scope(form: &OAuthForm, allowed: &Scope) -> Result<Scope, OAuthError> {
    let Some(text) = form.get("scope") else {
        return Ok(allowed.clone());
    };
    let requested = Scope::parse(text).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    if let Some(extra) = requested.missing_from(allowed).next() {
        return Err(OAuthError::invalid_scope(format!(
            "scope {extra:?} is not allowed for this client"
        )));
    }
    Ok(requested)
}

/// What an access token says, before signing.
pub struct AccessTokenRequest<'a> {
    pub grant_type: &'static str,
    pub subject: &'a str,
    pub client_id: &'a str,
    pub scope: &'a Scope,
    pub resources: &'a [ResourceUri],
    /// RFC 9449 §6: the proof key's thumbprint, when the token is bound.
    pub jkt: Option<&'a str>,
    pub ip: Option<String>,
}

/// Signs an RFC 9068 access token and records its issuance.
pub async fn issue_access_token(
    state: &State,
    req: AccessTokenRequest<'_>,
) -> Result<Issued, Error> {
    let now = state.now();
    let ttl = state.config.access_token_ttl;
    let aud = if req.resources.is_empty() {
        Audience::One(state.config.default_audience.clone())
    } else {
        Audience::from_list(
            req.resources
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
        )
    };
    let scope = (!req.scope.is_empty()).then(|| req.scope.to_string());
    let claims = AccessTokenClaims {
        iss: state.config.issuer.clone(),
        sub: req.subject.to_string(),
        aud,
        client_id: req.client_id.to_string(),
        scope: scope.clone(),
        jti: random_id(),
        iat: now,
        exp: now + ttl,
        nbf: None,
        cnf: req.jkt.map(|jkt| Confirmation {
            jkt: jkt.to_string(),
        }),
        act: None,
        may_act: None,
        agent_id: None,
        owner: None,
        extra: Default::default(),
    };
    let keys = state.keys.current();
    let signer = keys
        .signer(now)
        .ok_or_else(|| Error::Internal("no active signing key".into()))?;
    let access_token = state
        .signing
        .sign(signer, ACCESS_TOKEN_TYP, &claims)
        .await?;

    state.metrics.token_issued(req.grant_type);
    state.audit.record(AuditEvent {
        at: now,
        event: "token.issued",
        client_id: Some(claims.client_id.clone()),
        subject: Some(claims.sub.clone()),
        ip: req.ip,
        detail: json!({
            "grant_type": req.grant_type, "jti": claims.jti, "aud": claims.aud,
            "scope": claims.scope, "exp": claims.exp, "jkt": req.jkt,
        }),
    });
    Ok(Issued {
        response: TokenResponse {
            access_token,
            token_type: TokenResponse::token_type(req.jkt.is_some()),
            expires_in: ttl,
            scope,
            refresh_token: None,
        },
        jti: claims.jti,
        exp: claims.exp,
    })
}

/// RFC 8707 §2.2: resources requested at the token endpoint must lie within
/// those granted; none requested means all granted.
pub fn narrow_resources(
    requested: Vec<ResourceUri>,
    granted: &[String],
) -> Result<Vec<ResourceUri>, OAuthError> {
    if requested.is_empty() {
        return granted
            .iter()
            .map(|g| {
                ResourceUri::parse(g)
                    .map_err(|_| OAuthError::invalid_grant("the grant holds an invalid resource"))
            })
            .collect();
    }
    if let Some(extra) = requested
        .iter()
        .find(|r| !granted.iter().any(|g| g == r.as_str()))
    {
        return Err(OAuthError::invalid_target(format!(
            "resource {:?} was not granted",
            extra.as_str()
        )));
    }
    Ok(requested)
}
