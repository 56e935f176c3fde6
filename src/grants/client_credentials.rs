//! RFC 6749 §4.4 client credentials grant: a confidential client acting
//! as itself. `sub` is the client_id.

use super::Env;
use super::agent::{agent_of, check_proof_key, check_resources};
use super::{
    AccessTokenRequest, Grant, GrantFuture, TokenRequest, TokenResponse, issue_access_token,
    resources, target_scope,
};
use crate::error::{Error, OAuthError};
use crate::oauth::client_metadata::{AuthMethod, ClientMetadata};
use crate::oauth::grant_type::CLIENT_CREDENTIALS;

pub struct ClientCredentials;

impl Grant for ClientCredentials {
    fn grant_type(&self) -> &'static str {
        CLIENT_CREDENTIALS
    }

    fn for_agents(&self) -> bool {
        true
    }

    /// §4.4: "The client credentials grant type MUST only be used by
    /// confidential clients."
    fn check_client(&self, metadata: &ClientMetadata) -> Result<(), String> {
        if metadata.token_endpoint_auth_method == AuthMethod::None {
            return Err("client_credentials requires a confidential client (token_endpoint_auth_method other than none)".into());
        }
        Ok(())
    }

    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(cx, request))
    }
}

async fn run(cx: &Env<'_>, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let client = req.client;
    if client.method == AuthMethod::None {
        return Err(OAuthError::unauthorized_client(
            "client_credentials requires client authentication",
        )
        .into());
    }
    // Tokens with no user: only for resources that accept this kind of
    // client so (by default, clients someone vouched for).
    let targets = cx.resources.registry.resolve(&resources(req.params)?)?;
    targets.check_client_credentials(client.client.kind)?;
    let scope = target_scope(&targets, req.params, &client.client.metadata.scope())?;
    let resources = targets.uris();
    // An agent acting as itself: its tokens name it and its owner, are
    // bound only to its own keys, and reach only its resources.
    let agent = if client.client.kind.is_agent() {
        let agent = agent_of(cx, &req).await?;
        let x5t = check_proof_key(cx, &req).await?;
        check_resources(&agent, &targets)?;
        Some((agent, x5t))
    } else {
        None
    };
    let mut token = AccessTokenRequest::plain(
        CLIENT_CREDENTIALS,
        client.client_id(),
        client.client_id(),
        &scope,
        &resources,
        &req,
    );
    if let Some((agent, x5t)) = &agent {
        token.agent_id = Some(&agent.id);
        token.owner = Some(&agent.owner_id);
        token.x5t_s256 = x5t.clone();
    }
    let issued = issue_access_token(cx, token).await?;
    Ok(issued.response)
}
