//! The grants of the token endpoint (RFC 6749 §4, §4.5): one file each,
//! implementing [`Grant`] over a protocol-level [`TokenRequest`]. The
//! [`Registry`] is built once at start-up; `/token` looks the `grant_type`
//! up in it (unknown: `unsupported_grant_type`), registration accepts
//! exactly its grants (each with its own client rule), and metadata's
//! `grant_types_supported` is read from it.
//!
//! A new grant is one file here and one `.with(…)` line in
//! [`Registry::standard`].

pub mod agent;
pub mod authorization_code;
pub mod bridge_cert;
pub mod ciba;
pub mod client_credentials;
pub mod jwt_bearer;
pub mod passport;
pub mod pow_login;
pub mod refresh_token;
pub mod token_exchange;

use std::future::Future;
use std::pin::Pin;

use agentauth_resource::claims::{
    ACCESS_TOKEN_TYP, AccessTokenClaims, Actor, Audience, Confirmation,
};
use serde::Serialize;
use serde_json::json;

use crate::agents::Agents;
use crate::audit::AuditSink;
use crate::clients::{AuthenticatedClient, Clients};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::random_id;
use crate::error::{Error, OAuthError};
use crate::metrics::Metrics;
use crate::oauth::client_metadata::{ClientMetadata, GrantRules};
use crate::oauth::form::OAuthForm;
use crate::oauth::resource::{MAX_RESOURCES, ResourceUri};
use crate::oauth::scope::Scope;
use crate::proof::{CheckedProof, Spend};
use crate::resources::{Denial, DpopRule, ResourceRegistry, Resources, Targets};
use crate::store::Db;
use crate::store::audit::AuditEvent;
use crate::tokens::Tokens;

/// What a grant may reach: the domain contexts and the shared sinks,
/// never the application state (which composes them, and sits above the
/// grants). `crate::state::State::grant_env` lends them.
pub struct Env<'a> {
    pub config: &'a Config,
    pub db: &'a Db,
    pub clock: &'a SharedClock,
    pub tokens: &'a Tokens,
    pub clients: &'a Clients,
    pub agents: &'a Agents,
    pub resources: &'a Resources,
    pub audit: &'a AuditSink,
    pub metrics: &'a Metrics,
}

/// What every grant receives: the parsed parameters, the authenticated
/// client, the verified DPoP proof (RFC 9449 §5) and the request's clock.
pub struct TokenRequest<'a> {
    pub params: &'a OAuthForm,
    pub client: &'a AuthenticatedClient,
    /// The checked proof; its `jti` spend may still be under way: confirm
    /// it ([`TokenRequest::confirm_proof`]) before any write. Issuing an
    /// access token does.
    pub proof: Option<&'a CheckedProof>,
    /// The workload assertion that authenticated the client, verified
    /// (a grant that [`Grant::authenticate_itself`] spends it).
    pub assertion: Option<&'a crate::agents::federation::Verified>,
    /// The time of the request, read once.
    pub now: i64,
    /// The client's address, for the audit trail.
    pub ip: Option<String>,
}

impl TokenRequest<'_> {
    /// RFC 9449 §6: the thumbprint the issued token is bound to.
    pub fn jkt(&self) -> Option<&str> {
        self.proof.map(|p| p.jkt.as_str())
    }

    /// Waits until the proof's `jti` is known to be spent by this request.
    pub async fn confirm_proof(&self) -> Result<(), Error> {
        match self.proof {
            Some(p) => p.spend.confirm().await,
            None => Ok(()),
        }
    }

    /// What [`issue_access_token`] confirms while it signs.
    pub fn spend(&self) -> Option<&Spend> {
        self.proof.map(|p| &p.spend)
    }
}

pub type GrantFuture<'a> = Pin<Box<dyn Future<Output = Result<TokenResponse, Error>> + Send + 'a>>;

/// What [`Grant::authenticate_itself`] resolves to.
pub type SelfAuthFuture<'a> = Pin<
    Box<
        dyn Future<
                Output = Result<(AuthenticatedClient, crate::agents::federation::Verified), Error>,
            > + Send
            + 'a,
    >,
>;

/// One grant type of the token endpoint.
pub trait Grant: Send + Sync {
    /// The `grant_type` value: an RFC 6749 name, or an absolute URI for an
    /// extension grant (RFC 6749 §4.5).
    fn grant_type(&self) -> &'static str;

    /// RFC 7591 §2: `Err(reason)` when a client with this metadata may not
    /// register the grant.
    fn check_client(&self, _metadata: &ClientMetadata) -> Result<(), String> {
        Ok(())
    }

    /// Whether every agent's client is registered with this grant (the
    /// grants an agent acts by; the others are for clients a user runs).
    fn for_agents(&self) -> bool {
        false
    }

    /// Workload federation (RFC 7523 §2.1): a request with no client
    /// credentials whose grant carries an assertion that names its client.
    /// `Some` when this grant authenticates such a request itself (the
    /// client and the verified assertion, which the grant then spends
    /// instead of verifying it twice); `None`, the default, sends the
    /// request to ordinary client authentication.
    fn authenticate_itself<'a>(
        &'a self,
        _cx: &'a Env<'a>,
        _params: &'a OAuthForm,
    ) -> Option<SelfAuthFuture<'a>> {
        None
    }

    /// Whether the grant checks a DPoP proof's `nonce` itself (its own
    /// single-use nonces) instead of the server's RFC 9449 §8 nonces.
    fn checks_dpop_nonce(&self) -> bool {
        false
    }

    /// Runs the grant for an authenticated client allowed to use it.
    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a>;
}

/// The grants this server runs, by `grant_type`.
#[derive(Default)]
pub struct Registry {
    grants: Vec<Box<dyn Grant>>,
}

impl Registry {
    /// The grants every agentauth server runs.
    pub fn standard() -> Self {
        Self::default()
            .with(authorization_code::AuthorizationCode)
            .with(refresh_token::RefreshToken)
            .with(client_credentials::ClientCredentials)
            .with(passport::Passport)
            .with(token_exchange::TokenExchange)
            .with(jwt_bearer::JwtBearer)
            .with(pow_login::PowLogin)
            .with(bridge_cert::BridgeCert)
            .with(ciba::Ciba)
    }

    pub fn with(mut self, grant: impl Grant + 'static) -> Self {
        self.grants.retain(|g| g.grant_type() != grant.grant_type());
        self.grants.push(Box::new(grant));
        self
    }

    pub fn get(&self, grant_type: &str) -> Option<&dyn Grant> {
        self.grants
            .iter()
            .find(|g| g.grant_type() == grant_type)
            .map(|g| g.as_ref())
    }

    /// `grant_types_supported`, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.grants.iter().map(|g| g.grant_type()).collect()
    }

    /// The grant named by `grant_type` (RFC 6749 §5.2 `unsupported_grant_type`).
    pub fn lookup(&self, grant_type: &str) -> Result<&dyn Grant, OAuthError> {
        self.get(grant_type).ok_or_else(|| {
            OAuthError::unsupported_grant_type(format!(
                "grant_type {grant_type:?} is not supported"
            ))
        })
    }
}

impl GrantRules for Registry {
    fn supports(&self, grant_type: &str) -> bool {
        self.get(grant_type).is_some()
    }

    fn check_client(&self, grant_type: &str, metadata: &ClientMetadata) -> Result<(), String> {
        match self.get(grant_type) {
            Some(g) => g.check_client(metadata),
            None => Err(format!(
                "grant type {grant_type:?} is not supported by this server"
            )),
        }
    }

    fn agent_grants(&self) -> Vec<&'static str> {
        self.grants
            .iter()
            .filter(|g| g.for_agents())
            .map(|g| g.grant_type())
            .collect()
    }
}

/// Runs `grant` for a client: RFC 6749 §5.2 `unauthorized_client` unless
/// the client registered it.
pub async fn dispatch(
    cx: &Env<'_>,
    grant: &dyn Grant,
    request: TokenRequest<'_>,
) -> Result<TokenResponse, Error> {
    // An agent runs every agent grant, also one added after it was made
    // (its stored metadata lists the grants of its day).
    let agent_grant = grant.for_agents() && request.client.client.kind.is_agent();
    if !agent_grant
        && !request
            .client
            .client
            .metadata
            .allows_grant(grant.grant_type())
    {
        return Err(OAuthError::unauthorized_client(format!(
            "client is not registered for the {} grant",
            grant.grant_type()
        ))
        .into());
    }
    let proof = request.proof;
    let response = grant.handle(cx, request).await?;
    // Nothing leaves the server before the proof's jti is spent.
    if let Some(p) = proof {
        p.spend.confirm().await?;
    }
    Ok(response)
}

/// RFC 6749 §5.1 successful response, and RFC 8693 §2.2.1's
/// `issued_token_type` for grants that issue something other than an
/// access token.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// `Bearer`, `DPoP` (RFC 9449 §5), or `N_A` (RFC 8693 §2.2.1).
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// RFC 9396 §7: the details granted, when the token carries some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<serde_json::Value>>,
}

use crate::oauth::grant_type::{ACCESS_TOKEN_TYPE, JWT_BEARER, TOKEN_EXCHANGE};

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

/// RFC 8707 §2: every `resource` is an absolute URI without a fragment.
pub fn resources(form: &OAuthForm) -> Result<Vec<ResourceUri>, OAuthError> {
    if form.get_all("resource").count() > MAX_RESOURCES {
        return Err(OAuthError::invalid_target(format!(
            "at most {MAX_RESOURCES} resource values per request"
        )));
    }
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
    /// RFC 8705 §3.1: the bridge certificate of that key, when one is live.
    pub x5t_s256: Option<String>,
    /// RFC 8693 §4.1: who acts for the subject.
    pub act: Option<Actor>,
    /// The agent the token is issued to or through, and its owner.
    pub agent_id: Option<&'a str>,
    pub owner: Option<&'a str>,
    /// The DPoP proof's pending `jti` spend, confirmed while signing.
    pub spend: Option<&'a Spend>,
    /// Lifetime, when shorter than the configured one (a delegated token
    /// never outlives its subject token).
    pub max_ttl: Option<i64>,
    /// RFC 9396 §9.1: the rich authorization details granted, validated.
    pub authorization_details: Option<Vec<serde_json::Value>>,
    pub now: i64,
    pub ip: Option<String>,
}

impl<'a> AccessTokenRequest<'a> {
    /// A token for `subject` through `client_id`, bound to the request's
    /// DPoP proof (its spend confirmed while signing), with no actor, agent
    /// or shortened lifetime: what the RFC 6749 grants issue.
    pub fn plain(
        grant_type: &'static str,
        subject: &'a str,
        client_id: &'a str,
        scope: &'a Scope,
        resources: &'a [ResourceUri],
        request: &'a TokenRequest<'a>,
    ) -> Self {
        Self {
            grant_type,
            subject,
            client_id,
            scope,
            resources,
            jkt: request.jkt(),
            x5t_s256: None,
            act: None,
            agent_id: None,
            owner: None,
            spend: request.spend(),
            max_ttl: None,
            authorization_details: None,
            now: request.now,
            ip: request.ip.clone(),
        }
    }
}

/// Signs an RFC 9068 access token and records its issuance.
pub async fn issue_access_token(
    cx: &Env<'_>,
    req: AccessTokenRequest<'_>,
) -> Result<Issued, Error> {
    let now = req.now;
    // The resources' DPoP policy (resources file `dpop`): one that takes
    // only bound tokens never gets a bearer token (RFC 9728
    // `dpop_bound_access_tokens_required`); one that takes none gets a
    // bearer token even when the client proved a key (RFC 9449 §5).
    let jkt = match cx.resources.registry.dpop_rule(req.resources)? {
        DpopRule::Required(uri) if req.jkt.is_none() => {
            return Err(OAuthError::invalid_dpop_proof(format!(
                "resource {uri:?} takes only DPoP-bound tokens; send a DPoP proof"
            ))
            .into());
        }
        DpopRule::Refused(_) => None,
        DpopRule::Required(_) | DpopRule::Accepted => req.jkt,
    };
    let ttl = req.max_ttl.map_or(cx.config.access_token_ttl, |max| {
        max.min(cx.config.access_token_ttl)
    });
    let aud = if req.resources.is_empty() {
        Audience::One(cx.resources.registry.default_audience().uri.clone())
    } else {
        Audience::from_list(
            req.resources
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
        )
    };
    // The grant's, not the token's (SEP-2207).
    let token_scope = req.scope.without(crate::oauth::scope::OFFLINE_ACCESS);
    let scope = (!token_scope.is_empty()).then(|| token_scope.to_string());
    let (status, status_claim) = cx.tokens.status.allocate(now).await?;
    let claims = AccessTokenClaims {
        iss: cx.config.issuer.clone(),
        sub: req.subject.to_string(),
        aud,
        client_id: req.client_id.to_string(),
        scope: scope.clone(),
        jti: random_id()?,
        iat: now,
        exp: now + ttl,
        nbf: None,
        cnf: jkt.map(|jkt| Confirmation {
            jkt: jkt.to_string(),
            x5t_s256: req.x5t_s256.clone(),
        }),
        act: req.act,
        may_act: None,
        agent_id: req.agent_id.map(str::to_string),
        owner: req.owner.map(str::to_string),
        status: Some(status_claim),
        authorization_details: req.authorization_details,
        extra: Default::default(),
    };
    let keys = cx.tokens.keys.current();
    let signer = keys
        .signer(now)
        .ok_or_else(|| Error::Internal("no active signing key".into()))?;
    // The DPoP replay check (a database round trip on PostgreSQL) was
    // queued when the proof was checked; its answer is asked for once the
    // token is signed, so that one statement carries every proof queued
    // meanwhile (`crate::replay::batch`). No token without both.
    let signed = cx
        .tokens
        .signing
        .sign(signer, ACCESS_TOKEN_TYP, &claims)
        .await;
    if let Some(spend) = req.spend {
        spend.confirm().await?;
    }
    let access_token = signed?;
    // Where its status is, when something else than the token can revoke
    // it: a user's grant, or a kill of an agent it names
    // (`crate::tokens::status`). Committed before the token leaves.
    let agents = crate::tokens::live::named_agents(
        &claims.sub,
        claims.agent_id.as_deref(),
        claims.act.as_ref(),
    );
    if !agents.is_empty() || claims.sub != claims.client_id {
        cx.tokens
            .status
            .record(crate::store::status::Entry {
                jti: claims.jti.clone(),
                status,
                iat: claims.iat,
                exp: claims.exp,
                agents: agents.into_iter().map(str::to_string).collect(),
            })
            .await?;
    }

    cx.metrics.token_issued(req.grant_type);
    cx.audit.record(AuditEvent {
        at: now,
        event: "token.issued",
        client_id: Some(claims.client_id.clone()),
        subject: Some(claims.sub.clone()),
        ip: req.ip,
        detail: json!({
            "grant_type": req.grant_type, "jti": claims.jti, "aud": claims.aud,
            "scope": claims.scope, "exp": claims.exp, "jkt": jkt,
            "x5t#S256": req.x5t_s256,
            "agent_id": claims.agent_id, "act": claims.act,
        }),
    });
    Ok(Issued {
        response: TokenResponse {
            access_token,
            issued_token_type: None,
            token_type: TokenResponse::token_type(jkt.is_some()),
            expires_in: ttl,
            scope,
            refresh_token: None,
            authorization_details: claims.authorization_details,
        },
        jti: claims.jti,
        exp: claims.exp,
    })
}

impl From<Denial> for OAuthError {
    fn from(denial: Denial) -> Self {
        match denial {
            Denial::Target(why) => OAuthError::invalid_target(why),
            Denial::Scope(why) => OAuthError::invalid_scope(why),
            Denial::Client(why) => OAuthError::unauthorized_client(why),
            Denial::Details(why) => OAuthError::invalid_authorization_details(why),
        }
    }
}

impl From<Denial> for Error {
    fn from(denial: Denial) -> Self {
        Error::OAuth(denial.into())
    }
}

/// The scope of a token for `targets`: the requested one, which must lie
/// within `allowed` (what the client or grant holds) and be offered by
/// every target; absent, `allowed` less what the targets do not offer.
pub fn target_scope(
    targets: &Targets<'_>,
    form: &OAuthForm,
    allowed: &Scope,
) -> Result<Scope, OAuthError> {
    if form.get("scope").is_none() {
        return Ok(targets.narrow(allowed));
    }
    let scope = requested_scope(form, allowed)?;
    targets.check_scope(&scope)?;
    Ok(scope)
}

/// The resources of a token issued from a grant: those requested (as
/// registered), which must lie within the grant's, or all the grant's;
/// each must still be registered.
pub fn granted_targets<'r>(
    registry: &'r ResourceRegistry,
    form: &OAuthForm,
    granted: &[String],
) -> Result<Targets<'r>, OAuthError> {
    let requested = registry.resolve(&resources(form)?)?.uris();
    Ok(registry.resolve(&narrow_resources(requested, granted)?)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::grant_type::{PASSPORT, POW_LOGIN};

    struct Custom;

    impl Grant for Custom {
        fn grant_type(&self) -> &'static str {
            "urn:example:params:grant-type:custom"
        }

        fn check_client(&self, metadata: &ClientMetadata) -> Result<(), String> {
            Err(format!("not for {:?}", metadata.client_name))
        }

        fn handle<'a>(&'a self, _: &'a Env<'a>, _: TokenRequest<'a>) -> GrantFuture<'a> {
            Box::pin(async { Err(OAuthError::invalid_grant("custom").into()) })
        }
    }

    /// A new grant is one `with` line: it is looked up, listed for
    /// metadata, and its registration rule is the registry's.
    #[test]
    fn a_grant_is_one_registration_line() {
        let registry = Registry::standard().with(Custom);
        assert_eq!(
            registry.names(),
            [
                "authorization_code",
                "refresh_token",
                "client_credentials",
                PASSPORT,
                TOKEN_EXCHANGE,
                JWT_BEARER,
                POW_LOGIN,
                crate::oauth::grant_type::BRIDGE_CERT,
                crate::oauth::grant_type::CIBA,
                "urn:example:params:grant-type:custom"
            ]
        );
        assert!(registry.supports("urn:example:params:grant-type:custom"));
        assert!(!Registry::standard().supports("urn:example:params:grant-type:custom"));
        assert_eq!(
            Registry::standard()
                .lookup("password")
                .err()
                .map(|e| e.error),
            Some("unsupported_grant_type")
        );
    }
}
