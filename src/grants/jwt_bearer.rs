//! RFC 7523 §2.1 JWT bearer grant, for the issuers of `--federation-file`
//! ([`crate::federation`]):
//!
//! - a workload token (a CI job's OIDC token, a service account token)
//!   that a rule maps to an agent gets that agent an access token, or a
//!   passport with `requested_token_type` naming it (bound to the DPoP
//!   proof's key, which need not be a registered one: the workload has
//!   no stored key). The assertion authenticates the agent: no client
//!   credentials are needed.
//! - an Identity Assertion JWT (`oauth-id-jag+jwt`) for a user, issued to
//!   the authenticated client, gets that client a token for the user.
//!
//! Every assertion is single-use (its `jti`, per issuer, across nodes).

use agentauth_resource::claims::PASSPORT_TOKEN_TYPE;

use super::agent::{agent_of, check_resources};
use super::{
    ACCESS_TOKEN_TYPE, AccessTokenRequest, Grant, GrantFuture, JWT_BEARER, TokenRequest,
    TokenResponse, issue_access_token, resources, target_scope,
};
use crate::clients::AuthenticatedClient;
use crate::error::{Error, OAuthError};
use crate::federation::{self, Mapped};
use crate::oauth::client_kind::ClientKind;
use crate::oauth::client_metadata::AuthMethod;
use crate::oauth::form::OAuthForm;
use crate::oauth::scope::Scope;
use crate::state::State;
use crate::store;

pub struct JwtBearer;

impl Grant for JwtBearer {
    fn grant_type(&self) -> &'static str {
        JWT_BEARER
    }

    fn authenticates_itself(&self) -> bool {
        true
    }

    fn handle<'a>(&'a self, state: &'a State, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(state, request))
    }
}

/// The client of a workload assertion sent with no client credentials:
/// the agent its issuer's rule names, and the verified assertion (the
/// grant spends it; it is not verified twice).
pub async fn assertion_client(
    state: &State,
    form: &OAuthForm,
) -> Result<(AuthenticatedClient, federation::Verified), Error> {
    let assertion = form.require("assertion")?;
    let verified = federation::verify(state, assertion)
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
    match state.client(agent_id).await? {
        Some(client) if client.kind == ClientKind::Agent => Ok((
            AuthenticatedClient {
                client,
                method: AuthMethod::None,
            },
            verified,
        )),
        _ => Err(OAuthError::invalid_grant("the rule names an agent that does not exist").into()),
    }
}

async fn run(state: &State, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let federation::Verified { mapped, jti, exp } = match req.assertion {
        Some(verified) => verified.clone(),
        None => federation::verify(state, req.params.require("assertion")?)
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
            let agent = agent_of(state, &req).await?;
            spend(state, &jti, exp).await?;
            match req.params.get("requested_token_type") {
                Some(PASSPORT_TOKEN_TYPE) => {
                    let jkt = req.jkt().ok_or_else(|| {
                        OAuthError::invalid_request(
                            "a federated passport is bound to the key of a DPoP proof; send one",
                        )
                    })?;
                    let x5t = state.bridge_binding(&agent.id, jkt, req.now).await?;
                    super::passport::issue(state, &req, &agent, jkt.to_string(), x5t).await
                }
                None | Some(ACCESS_TOKEN_TYPE) => {
                    let targets = state.config.resources.resolve(&resources(req.params)?)?;
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
                    Ok(issue_access_token(state, token).await?.response)
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
            if client_id != req.client.client_id() || req.client.method == AuthMethod::None {
                return Err(OAuthError::invalid_grant(
                    "the identity assertion was issued to another client",
                )
                .into());
            }
            let user = store::users::by_username(&state.db, &username)
                .await?
                .ok_or_else(|| OAuthError::invalid_grant("no local account for this user"))?;
            spend(state, &jti, exp).await?;
            let mut requested = resources(req.params)?;
            if requested.is_empty()
                && let Some(r) = resource
            {
                requested.push(
                    crate::oauth::resource::ResourceUri::parse(&r)
                        .map_err(|why| OAuthError::invalid_target(format!("{why}: {r:?}")))?,
                );
            }
            let targets = state.config.resources.resolve(&requested)?;
            let mut allowed = req.client.client.metadata.scope();
            if let Some(granted) = scope {
                allowed = allowed.intersection(&Scope::parse(&granted).unwrap_or_default());
            }
            let scope = target_scope(&targets, req.params, &allowed)?;
            let uris = targets.uris();
            let token = AccessTokenRequest::plain(
                JWT_BEARER,
                &user.id,
                req.client.client_id(),
                &scope,
                &uris,
                &req,
            );
            Ok(issue_access_token(state, token).await?.response)
        }
    }
}

/// RFC 7523 §3 item 7: one use per assertion, across every node.
pub(crate) async fn spend(state: &State, jti: &str, exp: i64) -> Result<(), Error> {
    if !state.spend_once(format!("jwt-bearer:{jti}"), exp).await? {
        return Err(OAuthError::invalid_grant("the assertion was already used").into());
    }
    Ok(())
}
