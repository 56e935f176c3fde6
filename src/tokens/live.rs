//! Whether a token we issued is still good: signed by one of our keys,
//! unexpired, not revoked, its client still there, and every agent it
//! names (its `agent_id`, each actor of its `act` chain) still active.
//! Introspection and token exchange ask the same question here. A storage
//! failure is an error (fail closed), never "live".

use agentauth_resource::claims::{AccessTokenClaims, Actor, PASSPORT_TYP, PassportClaims};

use super::Tokens;
use crate::keys::VerifyError;
use crate::store::StoreError;

/// The claims of `token` if it is a live access token.
pub async fn live_access_token(
    tokens: &Tokens,
    token: &str,
) -> Result<Option<AccessTokenClaims>, StoreError> {
    let now = tokens.clock.now();
    let Some(claims) =
        verify_reloading(tokens, now, || tokens.keys.verify_access_token(token)).await
    else {
        return Ok(None);
    };
    if claims.iss != tokens.config.issuer
        || claims.exp <= now
        || claims.nbf.is_some_and(|nbf| nbf > now)
    {
        return Ok(None);
    }
    if tokens
        .revocations
        .is_revoked(&tokens.db, &claims.jti, now)
        .await?
    {
        return Ok(None);
    }
    if tokens.clients.get(&claims.client_id).await?.is_none() {
        return Ok(None);
    }
    if !agents_active(
        tokens,
        claims.iat,
        &claims.sub,
        claims.agent_id.as_deref(),
        claims.act.as_ref(),
    )
    .await?
    {
        return Ok(None);
    }
    Ok(Some(AccessTokenClaims::clone(&claims)))
}

/// The claims of `token` if it is a live agent passport.
pub async fn live_passport(
    tokens: &Tokens,
    token: &str,
) -> Result<Option<PassportClaims>, StoreError> {
    let now = tokens.clock.now();
    let Some(claims) = verify_reloading(tokens, now, || {
        tokens.keys.verify::<PassportClaims>(token, PASSPORT_TYP)
    })
    .await
    else {
        return Ok(None);
    };
    if claims.iss != tokens.config.issuer || claims.exp <= now || claims.sub != claims.agent_id {
        return Ok(None);
    }
    if tokens
        .revocations
        .is_revoked(&tokens.db, &claims.jti, now)
        .await?
    {
        return Ok(None);
    }
    if !tokens.agents.honours(&claims.agent_id, claims.iat).await? {
        return Ok(None);
    }
    Ok(Some(claims))
}

/// `verify`, once more after reloading the keys when the token names a
/// `kid` this node has not loaded (see `KeyRing::reload_for_unknown_kid`).
pub async fn verify_reloading<T>(
    tokens: &Tokens,
    now: i64,
    verify: impl Fn() -> Result<T, VerifyError>,
) -> Option<T> {
    match verify() {
        Ok(claims) => Some(claims),
        Err(VerifyError::UnknownKey)
            if tokens.keys.reload_for_unknown_kid(&tokens.db, now).await =>
        {
            verify().ok()
        }
        Err(_) => None,
    }
}

/// Every agent a token names is active and the token was issued (`iat`)
/// after each one's cut-off (the kill switch, and SECURITY.md "Kill, then
/// re-enable"): its `agent_id`, each actor of its `act` chain, and its
/// subject when that is an agent (a token derived from an agent's
/// passport acts for the agent).
pub async fn agents_active(
    tokens: &Tokens,
    iat: i64,
    sub: &str,
    agent_id: Option<&str>,
    act: Option<&Actor>,
) -> Result<bool, StoreError> {
    for id in named_agents(sub, agent_id, act) {
        if !tokens.agents.honours(id, iat).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The agents a token names: its `agent_id`, each actor of its `act`
/// chain, and its subject when that is an agent; each once.
pub fn named_agents<'a>(
    sub: &'a str,
    agent_id: Option<&'a str>,
    act: Option<&'a Actor>,
) -> Vec<&'a str> {
    let actors = act
        .into_iter()
        .flat_map(Actor::chain)
        .filter_map(|a| a.agent_id.as_deref());
    let subject = crate::store::agents::is_agent_id(sub).then_some(sub);
    let mut ids: Vec<&str> = agent_id.into_iter().chain(actors).chain(subject).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}
