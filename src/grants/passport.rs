//! The passport grant (`urn:agentauth:params:grant-type:passport`): an
//! agent, authenticated with its own key, gets a signed statement of who
//! it is (a JWT any site verifies against our JWKS), bound to a key it
//! holds. Response in RFC 8693 §2.2.1 shape: `issued_token_type` names
//! the passport, `token_type` is `N_A`.

use agentauth_resource::claims::{
    Audience, Confirmation, PASSPORT_TOKEN_TYPE, PASSPORT_TYP, PassportClaims,
};
use serde_json::json;

use super::Env;
use super::agent::{agent_of, check_resource, held_key};
use super::{Grant, GrantFuture, TokenRequest, TokenResponse, requested_scope};
use crate::crypto::random_id;
use crate::error::{Error, OAuthError};
use crate::oauth::client_metadata::{AuthMethod, ClientMetadata};
use crate::oauth::grant_type::PASSPORT;
use crate::oauth::scope::Scope;
use crate::resources::same_resource;
use crate::store::agents::AgentRow;
use crate::store::audit::AuditEvent;

/// Most sites one passport names.
const MAX_AUDIENCES: usize = 4;

pub struct Passport;

impl Grant for Passport {
    fn grant_type(&self) -> &'static str {
        PASSPORT
    }

    fn for_agents(&self) -> bool {
        true
    }

    fn check_client(&self, metadata: &ClientMetadata) -> Result<(), String> {
        if metadata.token_endpoint_auth_method != AuthMethod::PrivateKeyJwt {
            return Err("the passport grant is for agents (private_key_jwt)".into());
        }
        Ok(())
    }

    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(cx, request))
    }
}

/// A site a passport may name (its `aud`): a registered client, or an
/// absolute URI of a site that verifies agents against our JWKS. A URI
/// that is one of our protected resources (registered, the default
/// audience, or this issuer) is allowed only when the resource's entry
/// says `accept_passports`, and is then written in its registered
/// spelling: a passport is an identity, not an access token, and must
/// not reach a resource outside its policy (SECURITY.md, "Passport used
/// as an access token"). Otherwise RFC 8693 §2.2.2 `invalid_target`.
async fn audience(cx: &Env<'_>, value: &str) -> Result<String, Error> {
    let uri = url::Url::parse(value).is_ok_and(|u| !u.cannot_be_a_base() && u.fragment().is_none());
    if uri {
        let registry = &cx.resources.registry;
        let issuer = same_resource(value, &cx.config.issuer);
        let refused = || {
            Err(OAuthError::invalid_target(format!(
                "audience {value:?} is a resource of this server that does not accept \
                 passports (accept_passports in its resources-file entry); ask for an \
                 access token for it instead"
            ))
            .into())
        };
        return match registry.passport_target(value) {
            Some(resource) if resource.accept_passports => Ok(resource.uri.clone()),
            Some(_) => refused(),
            None if issuer => refused(),
            None => Ok(value.to_string()),
        };
    }
    if cx.clients.get(value).await?.is_some() {
        Ok(value.to_string())
    } else {
        Err(OAuthError::invalid_target(format!(
            "audience {value:?} is neither an absolute URI nor a registered client"
        ))
        .into())
    }
}

async fn run(cx: &Env<'_>, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let agent = agent_of(cx, &req).await?;
    let (jkt, x5t) = held_key(cx, &req).await?;
    issue(cx, &req, &agent, jkt, x5t).await
}

/// Signs a passport for `agent` bound as `cnf` says, with `scope` and `aud`,
/// and records it (metrics, audit `passport.issued`). Every passport is
/// made here: the passport grant's and a proof-of-work login's.
pub async fn sign(
    cx: &Env<'_>,
    agent: &AgentRow,
    cnf: Confirmation,
    scope: &Scope,
    aud: Option<Audience>,
    now: i64,
    ip: Option<String>,
) -> Result<(String, PassportClaims), Error> {
    let (status, status_claim) = cx.tokens.status.allocate(now).await?;
    let claims = PassportClaims {
        iss: cx.config.issuer.clone(),
        sub: agent.id.clone(),
        aud,
        owner: agent.owner_id.clone(),
        agent_name: agent.name.clone(),
        scope: (!scope.is_empty()).then(|| scope.to_string()),
        cnf,
        jti: random_id()?,
        iat: now,
        exp: now + cx.config.passport_ttl,
        agent_id: agent.id.clone(),
        status: Some(status_claim),
    };
    let keys = cx.tokens.keys.current();
    let signer = keys
        .signer(now)
        .ok_or_else(|| Error::Internal("no active signing key".into()))?;
    let passport = cx
        .tokens
        .signing
        .sign(signer, PASSPORT_TYP, &claims)
        .await?;
    // A kill of the agent finds it by its index (`crate::tokens::status`).
    cx.tokens
        .status
        .record(crate::store::status::Entry {
            jti: claims.jti.clone(),
            status,
            iat: claims.iat,
            exp: claims.exp,
            agents: vec![agent.id.clone()],
        })
        .await?;
    cx.metrics.token_issued(PASSPORT);
    cx.audit.record(AuditEvent {
        at: now,
        event: "passport.issued",
        client_id: Some(agent.id.clone()),
        subject: Some(agent.id.clone()),
        ip,
        detail: json!({ "jti": claims.jti, "aud": claims.aud, "scope": claims.scope,
                        "exp": claims.exp, "jkt": claims.cnf.jkt, "x5t#S256": claims.cnf.x5t_s256,
                        "owner": claims.owner }),
    });
    Ok((passport, claims))
}

/// Signs a passport for `agent` bound to `jkt`, with the request's
/// `scope` (within the agent's) and `audience` values (the sites).
pub async fn issue(
    cx: &Env<'_>,
    req: &TokenRequest<'_>,
    agent: &AgentRow,
    jkt: String,
    x5t_s256: Option<String>,
) -> Result<TokenResponse, Error> {
    let allowed = Scope::parse(&agent.scope).unwrap_or_default();
    let scope = requested_scope(req.params, &allowed)?;
    let requested: Vec<&str> = req.params.get_all("audience").collect();
    if requested.len() > MAX_AUDIENCES {
        return Err(
            OAuthError::invalid_target(format!("at most {MAX_AUDIENCES} audience values")).into(),
        );
    }
    let mut sites = Vec::with_capacity(requested.len());
    for value in requested {
        let site = audience(cx, value).await?;
        if !sites.contains(&site) {
            sites.push(site);
        }
    }
    // A site that is one of our resources is a target like any other: an
    // agent limited to some resources names only those (SECURITY.md,
    // "Agents made by owners").
    for site in &sites {
        if cx.resources.registry.passport_target(site).is_some() {
            check_resource(agent, site)?;
        }
    }
    req.confirm_proof().await?;
    let aud = (!sites.is_empty()).then(|| Audience::from_list(sites));
    let (passport, claims) = sign(
        cx,
        agent,
        Confirmation { jkt, x5t_s256 },
        &scope,
        aud,
        req.now,
        req.ip.clone(),
    )
    .await?;
    let ttl = cx.config.passport_ttl;
    Ok(TokenResponse {
        access_token: passport,
        issued_token_type: Some(PASSPORT_TOKEN_TYPE),
        token_type: "N_A",
        expires_in: ttl,
        scope: claims.scope,
        refresh_token: None,
        authorization_details: None,
    })
}
