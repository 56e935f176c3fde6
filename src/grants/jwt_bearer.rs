//! RFC 7523 §2.1 JWT bearer grant, for the issuers of `--federation-file`
//! ([`crate::agents::federation`]):
//!
//! - a workload token (a CI job's OIDC token, a service account token)
//!   that a rule maps to an agent gets that agent an access token, or a
//!   passport with `requested_token_type` naming it (bound to the DPoP
//!   proof's key, which need not be a registered one: the workload has
//!   no stored key). The assertion authenticates the agent: no client
//!   credentials are needed.
//! - an Identity Assertion JWT (`oauth-id-jag+jwt`) for a user, issued to
//!   the authenticated client, gets that client a token for the user, no
//!   wider than the assertion: its `resource` only, its `scope` at most.
//!
//! Every assertion is single-use (its `jti`, per issuer, across nodes),
//! and its spent `jti` is kept as long as the assertion is accepted.

use agentauth_resource::claims::PASSPORT_TOKEN_TYPE;

use super::Env;
use super::agent::{agent_of, check_proof_key, check_resources};
use super::{
    ACCESS_TOKEN_TYPE, AccessTokenRequest, Grant, GrantFuture, JWT_BEARER, SelfAuthFuture,
    TokenRequest, TokenResponse, issue_access_token, resources, target_scope,
};
use crate::agents::federation::{self, Mapped};
use crate::clients::AuthenticatedClient;
use crate::error::{Error, OAuthError};
use crate::oauth::client_metadata::AuthMethod;
use crate::oauth::form::OAuthForm;
use crate::oauth::resource::ResourceUri;
use crate::oauth::scope::Scope;
use crate::oauth::single_use::SpentUntil;
use crate::store;

pub struct JwtBearer;

impl Grant for JwtBearer {
    fn grant_type(&self) -> &'static str {
        JWT_BEARER
    }

    fn for_agents(&self) -> bool {
        true
    }

    fn authenticate_itself<'a>(
        &'a self,
        cx: &'a Env<'a>,
        params: &'a OAuthForm,
    ) -> Option<SelfAuthFuture<'a>> {
        workload_client(params).then(|| Box::pin(assertion_client(cx, params)) as _)
    }

    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(cx, request))
    }
}

/// Whether a request without client credentials may be authenticated by
/// its workload assertion: only an agent's, so a `client_id` (RFC 7523
/// §3.1 lets the request name it) must be an agent's.
pub fn workload_client(params: &OAuthForm) -> bool {
    params
        .get("client_id")
        .is_none_or(crate::store::agents::is_agent_id)
}

/// The client of a workload assertion sent with no client credentials:
/// the agent its issuer's rule names, and the verified assertion (the
/// grant spends it; it is not verified twice).
pub async fn assertion_client(
    cx: &Env<'_>,
    form: &OAuthForm,
) -> Result<(AuthenticatedClient, federation::Verified), Error> {
    let assertion = form.require("assertion")?;
    let verified = federation::verify(cx.agents, assertion)
        .await
        .map_err(OAuthError::invalid_grant)?;
    let Mapped::Agent(agent_id) = &verified.mapped else {
        return Err(OAuthError::invalid_client(
            "an identity assertion is presented by its client, which authenticates",
        )
        .into());
    };
    if form.get("client_id").is_some_and(|id| id != agent_id) {
        return Err(OAuthError::invalid_grant("the assertion maps to another agent").into());
    }
    match cx.clients.get(agent_id).await? {
        Some(client) if client.kind.is_agent() => Ok((
            AuthenticatedClient {
                client,
                method: AuthMethod::None,
            },
            verified,
        )),
        _ => Err(OAuthError::invalid_grant("the rule names an agent that does not exist").into()),
    }
}

async fn run(cx: &Env<'_>, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let federation::Verified {
        mapped,
        jti,
        spent_until,
    } = match req.assertion {
        Some(verified) => verified.clone(),
        None => federation::verify(cx.agents, req.params.require("assertion")?)
            .await
            .map_err(OAuthError::invalid_grant)?,
    };
    match mapped {
        Mapped::Agent(agent_id) => {
            if agent_id != req.client.client_id() {
                return Err(
                    OAuthError::invalid_grant("the assertion maps to another agent").into(),
                );
            }
            let agent = agent_of(cx, &req).await?;
            spend(cx, &jti, spent_until).await?;
            match req.params.get("requested_token_type") {
                Some(PASSPORT_TOKEN_TYPE) => {
                    let jkt = req.jkt().ok_or_else(|| {
                        OAuthError::invalid_request(
                            "a federated passport is bound to the key of a DPoP proof; send one",
                        )
                    })?;
                    let x5t = cx.agents.bridge_binding(&agent.id, jkt, req.now).await?;
                    super::passport::issue(cx, &req, &agent, jkt.to_string(), x5t).await
                }
                None | Some(ACCESS_TOKEN_TYPE) => {
                    let targets = cx.resources.registry.resolve(&resources(req.params)?)?;
                    check_resources(&agent, &targets)?;
                    let scope = target_scope(
                        &targets,
                        req.params,
                        &Scope::parse(&agent.scope).unwrap_or_default(),
                    )?;
                    let uris = targets.uris();
                    let mut token = AccessTokenRequest::plain(
                        JWT_BEARER, &agent.id, &agent.id, &scope, &uris, &req,
                    );
                    token.agent_id = Some(&agent.id);
                    token.owner = Some(&agent.owner_id);
                    Ok(issue_access_token(cx, token).await?.response)
                }
                Some(other) => Err(OAuthError::invalid_request(format!(
                    "requested_token_type {other:?} is not issued by this grant"
                ))
                .into()),
            }
        }
        Mapped::User {
            username,
            client_id,
            scope,
            resource,
        } => {
            // draft-ietf-oauth-identity-assertion-authz-grant: the assertion
            // is the IdP's decision for one client, one user, one resource
            // and some scopes (SECURITY.md, "Identity assertions"); the
            // token is no wider.
            if client_id != req.client.client_id() || req.client.method == AuthMethod::None {
                return Err(OAuthError::invalid_grant(
                    "the identity assertion was issued to another client",
                )
                .into());
            }
            let user = store::users::by_username(cx.db, &username)
                .await?
                .ok_or_else(|| OAuthError::invalid_grant("no local account for this user"))?;
            let requested = assertion_resources(resource.as_deref(), resources(req.params)?)?;
            let targets = cx.resources.registry.resolve(&requested)?;
            // An agent presenting an identity assertion stays within its
            // resources and its own keys (SECURITY.md, "Agents made by
            // owners"), and what it gets names it, so that it falls with
            // the kill switch (SECURITY.md, "Kill switch").
            let agent = if req.client.client.kind.is_agent() {
                let agent = agent_of(cx, &req).await?;
                check_resources(&agent, &targets)?;
                let x5t = check_proof_key(cx, &req).await?;
                Some((agent, x5t))
            } else {
                None
            };
            // The assertion's `scope` bounds the token; none grants none.
            let asserted = scope
                .as_deref()
                .and_then(|s| Scope::parse(s).ok())
                .unwrap_or_default();
            let allowed = req.client.client.metadata.scope().intersection(&asserted);
            let scope = target_scope(&targets, req.params, &allowed)?;
            let uris = targets.uris();
            // Spent only once everything else holds: a refused request
            // leaves the assertion usable.
            spend(cx, &jti, spent_until).await?;
            let mut token = AccessTokenRequest::plain(
                JWT_BEARER,
                &user.id,
                req.client.client_id(),
                &scope,
                &uris,
                &req,
            );
            if let Some((agent, x5t)) = &agent {
                token.agent_id = Some(&agent.id);
                token.owner = Some(&agent.owner_id);
                token.x5t_s256 = x5t.clone();
            }
            Ok(issue_access_token(cx, token).await?.response)
        }
    }
}

/// The resources of a token for an identity assertion: exactly the one
/// the assertion names (asked for, or implied when the request names
/// none); another → `invalid_target`. An assertion naming no resource is
/// for this server's default audience only.
fn assertion_resources(
    named: Option<&str>,
    requested: Vec<ResourceUri>,
) -> Result<Vec<ResourceUri>, OAuthError> {
    let Some(named) = named else {
        return match requested.first() {
            None => Ok(Vec::new()),
            Some(r) => Err(OAuthError::invalid_target(format!(
                "the identity assertion names no resource, so it grants none: {:?}",
                r.as_str()
            ))),
        };
    };
    let named = ResourceUri::parse(named).map_err(|why| {
        OAuthError::invalid_grant(format!("the identity assertion's resource: {why}"))
    })?;
    if let Some(other) = requested
        .iter()
        .find(|r| !crate::resources::same_resource(r.as_str(), named.as_str()))
    {
        return Err(OAuthError::invalid_target(format!(
            "the identity assertion is for {:?}, not {:?}",
            named.as_str(),
            other.as_str()
        )));
    }
    Ok(vec![named])
}

/// RFC 7523 §3 item 7: one use per assertion, across every node.
pub(crate) async fn spend(cx: &Env<'_>, jti: &str, until: SpentUntil) -> Result<(), Error> {
    if !cx
        .tokens
        .replay
        .spend_once(format!("jwt-bearer:{jti}"), until)
        .await?
    {
        return Err(OAuthError::invalid_grant("the assertion was already used").into());
    }
    Ok(())
}
