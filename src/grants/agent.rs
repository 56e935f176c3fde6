//! What the agent grants share: the authenticated client must be an
//! active agent, and a key it proves (DPoP) must be one of its own.

use std::sync::Arc;

use jsonwebtoken::jwk::Jwk;

use super::Env;
use super::TokenRequest;
use crate::error::{Error, OAuthError};
use crate::resources::{Targets, same_resource};
use crate::store::agents::AgentRow;

/// The agent behind the request's client: `unauthorized_client` for a
/// client that is not an agent, `invalid_client` for a disabled one (the
/// kill switch bites at the token endpoint at once). Before its cut-off
/// has passed (a kill undone, a key removed, within two seconds),
/// whatever it got would be born dead: `temporarily_unavailable`, retry
/// after a second.
pub async fn agent_of(cx: &Env<'_>, req: &TokenRequest<'_>) -> Result<Arc<AgentRow>, Error> {
    agent_of_client(cx.agents, req.client, req.now).await
}

/// [`agent_of`] for any endpoint an agent authenticates at.
pub async fn agent_of_client(
    agents: &crate::agents::Agents,
    client: &crate::clients::AuthenticatedClient,
    now: i64,
) -> Result<Arc<AgentRow>, Error> {
    if !client.client.kind.is_agent() {
        return Err(OAuthError::unauthorized_client("only agents may use this grant").into());
    }
    match agents.get(client.client_id()).await? {
        Some(agent) if agent.honours(now) => Ok(agent),
        Some(agent) if agent.active => {
            let mut e = OAuthError::new(
                503,
                "temporarily_unavailable",
                "the agent's credentials were cut off a moment ago; retry in a second",
            );
            e.retry_after = Some(1);
            Err(e.into())
        }
        _ => Err(OAuthError::invalid_client("the agent is disabled").into()),
    }
}

/// RFC 7638 thumbprint of `jwk`, when it is one of the agent's keys.
fn agent_jkt(req: &TokenRequest<'_>, matches: impl Fn(&Jwk) -> bool) -> Option<String> {
    req.client
        .client
        .metadata
        .jwks
        .iter()
        .flat_map(|set| set.keys.iter())
        .filter(|k| matches(k))
        .find_map(|k| agentauth_resource::jwk::thumbprint(k).ok())
}

/// An agent's DPoP proof must be made with one of its own keys: one it
/// registered, or one that a live bridge certificate of the agent
/// certifies. In that case the certificate's RFC 8705 `x5t#S256` comes
/// back, for the token's `cnf` (one key, one certificate, one binding).
pub async fn check_proof_key(
    cx: &Env<'_>,
    req: &TokenRequest<'_>,
) -> Result<Option<String>, Error> {
    let Some(jkt) = req.jkt() else {
        return Ok(None);
    };
    match cx
        .agents
        .bridge_binding(req.client.client_id(), jkt, req.now)
        .await?
    {
        Some(x5t) => Ok(Some(x5t)),
        None if is_agent_key(req, jkt) => Ok(None),
        None => Err(OAuthError::invalid_dpop_proof(
            "an agent's DPoP proof must use one of its registered keys or a key its bridge certificate certifies",
        )
        .into()),
    }
}

fn is_agent_key(req: &TokenRequest<'_>, jkt: &str) -> bool {
    agent_jkt(req, |k| {
        agentauth_resource::jwk::thumbprint(k).is_ok_and(|t| t == jkt)
    })
    .is_some()
}

/// The key a passport names: the DPoP proof's (one of the agent's keys,
/// with the `x5t#S256` of a bridge certificate for it), else the one that
/// signed the client assertion (by `kid`, or the only key).
pub async fn held_key(
    cx: &Env<'_>,
    req: &TokenRequest<'_>,
) -> Result<(String, Option<String>), Error> {
    let x5t = check_proof_key(cx, req).await?;
    if let Some(jkt) = req.jkt() {
        return Ok((jkt.to_string(), x5t));
    }
    let kid = req
        .params
        .get("client_assertion")
        .and_then(|a| jsonwebtoken::decode_header(a).ok())
        .and_then(|h| h.kid);
    let keys: Vec<&Jwk> = req
        .client
        .client
        .metadata
        .jwks
        .iter()
        .flat_map(|set| set.keys.iter())
        .collect();
    let key = match (&kid, keys.as_slice()) {
        (Some(kid), _) => keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid.as_str())),
        (None, [only]) => Some(only),
        (None, _) => None,
    };
    let jkt = key
        .and_then(|k| agentauth_resource::jwk::thumbprint(k).ok())
        .ok_or_else(|| {
            OAuthError::invalid_request(
                "name the key to bind: a DPoP proof, or a kid in the client assertion",
            )
        })?;
    Ok((jkt, None))
}

/// An agent limited to some resources gets tokens for those only: RFC
/// 8707 §2 `invalid_target` for any other. Every grant that issues an
/// agent something for a resource asks this (client_credentials, token
/// exchange, jwt-bearer, and the passport grant for an `audience` that is
/// a resource; SECURITY.md, "Agents made by owners").
pub fn check_resources(agent: &AgentRow, targets: &Targets<'_>) -> Result<(), OAuthError> {
    if agent.resources.is_empty() {
        return Ok(());
    }
    for uri in targets.uris() {
        check_resource(agent, uri.as_str())?;
    }
    if targets.uris().is_empty() {
        return Err(OAuthError::invalid_target(
            "this agent must name a resource it may use",
        ));
    }
    Ok(())
}

/// One resource `uri` against the agent's list (empty: any registered).
pub fn check_resource(agent: &AgentRow, uri: &str) -> Result<(), OAuthError> {
    if agent.resources.is_empty() || agent.resources.iter().any(|r| same_resource(r, uri)) {
        return Ok(());
    }
    Err(OAuthError::invalid_target(format!(
        "the agent may not get tokens for {uri:?}"
    )))
}
