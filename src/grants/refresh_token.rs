//! OAuth 2.1 §4.3 refresh token grant with rotation on every use. A
//! rotated token used again revokes its whole family (RFC 9700 §4.14.2),
//! except within a short grace window after its rotation (issue 12: clients
//! retry after a timeout, or refresh from two addresses): then the same
//! client, with the same DPoP key when the token is bound, gets the very
//! pair the rotation issued, and nothing is revoked. Of concurrent uses
//! exactly one rotates; the others, inside the window, get its pair. A
//! family never has more than one usable token. Scope may narrow, never widen;
//! `resource` may narrow per request.

use super::Env;
use super::{
    AccessTokenRequest, Grant, GrantFuture, TokenRequest, TokenResponse, granted_targets,
    issue_access_token,
};
use crate::crypto::{random_token, sha256};
use crate::error::{Error, OAuthError};
use crate::oauth::client_metadata::ClientMetadata;
use crate::oauth::grant_type::{AUTHORIZATION_CODE, REFRESH_TOKEN};
use crate::oauth::scope::Scope;
use crate::store::{self, grants::RefreshRow};

pub struct RefreshToken;

impl Grant for RefreshToken {
    fn grant_type(&self) -> &'static str {
        REFRESH_TOKEN
    }

    /// Refresh tokens come only from the authorization code grant here.
    fn check_client(&self, metadata: &ClientMetadata) -> Result<(), String> {
        if !metadata.allows_grant(AUTHORIZATION_CODE) {
            return Err("refresh_token is only issued with the authorization_code grant".into());
        }
        Ok(())
    }

    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(cx, request))
    }
}

async fn run(cx: &Env<'_>, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let (client, form, proof) = (req.client, req.params, req.proof);
    let presented = form.require("refresh_token")?;
    let old_hash = sha256(presented.as_bytes());
    let now = req.now;
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let row = store::grants::refresh(cx.db, old_hash)
        .await?
        .ok_or_else(invalid)?;
    // SECURITY.md, "Refresh tokens": another client's token.
    if row.client_id != client.client_id() {
        return Err(invalid().into());
    }
    if row.revoked_at.is_some() || row.expires_at <= now {
        return Err(invalid().into());
    }
    // The user may have been deleted since (issue 12 item 3).
    if store::users::by_id(cx.db, &row.user_id).await?.is_none() {
        return Err(invalid().into());
    }
    if row.rotated_at.is_some() {
        return retry_or_reuse(cx, &row, proof.map(|p| p.jkt.as_str()), now).await;
    }
    // SECURITY.md, "Refresh tokens": a bound token needs a proof by the same key.
    if let Some(bound) = &row.dpop_jkt {
        match proof {
            Some(p) if &p.jkt == bound => {}
            Some(_) => {
                return Err(OAuthError::invalid_dpop_proof(
                    "the refresh token is bound to another DPoP key",
                )
                .into());
            }
            None => {
                return Err(OAuthError::invalid_dpop_proof(
                    "the refresh token is DPoP-bound; send a proof",
                )
                .into());
            }
        }
    }
    let granted_scope = Scope::parse(&row.scope).unwrap_or_default();
    let granted: Vec<String> = serde_json::from_value(row.resources.clone()).unwrap_or_default();
    let targets = granted_targets(&cx.resources.registry, form, &granted)?;
    let scope = super::target_scope(&targets, form, &granted_scope)?;
    let resources = targets.uris();

    let mut issued = issue_access_token(
        cx,
        AccessTokenRequest::plain(
            REFRESH_TOKEN,
            &row.user_id,
            &row.client_id,
            &scope,
            &resources,
            &req,
        ),
    )
    .await?;
    let refresh_token = random_token()?;
    let next = RefreshRow {
        token_hash: sha256(refresh_token.as_bytes()).to_vec(),
        generation: row.generation + 1,
        created_at: now,
        expires_at: now + cx.config.refresh_token_ttl,
        rotated_at: None,
        revoked_at: None,
        access_jti: issued.jti.clone(),
        access_exp: issued.exp,
        retry_sealed: None,
        ..row.clone()
    };
    issued.response.refresh_token = Some(refresh_token);
    // What a retry within the grace window gets back: this very response.
    let sealed = if cx.config.refresh_grace_period > 0 {
        let plain =
            serde_json::to_vec(&issued.response).map_err(|e| Error::Internal(e.to_string()))?;
        Some(cx.tokens.refresh_retry_key.seal(&old_hash, &plain)?)
    } else {
        None
    };
    let gate = cx.tokens.write_gate().await;
    let rotated = store::grants::rotate_refresh(cx.db, old_hash, next, now, sealed).await?;
    drop(gate);
    if !rotated {
        // Lost a race with another use of the same token: a retry inside
        // the window gets the winner's pair; anything else is reuse.
        let Some(row) = store::grants::refresh(cx.db, old_hash).await? else {
            return Err(invalid().into());
        };
        if row.revoked_at.is_some() {
            return Err(invalid().into());
        }
        return retry_or_reuse(cx, &row, proof.map(|p| p.jkt.as_str()), now).await;
    }
    Ok(issued.response)
}

/// A rotated token presented again: inside the grace window, by the same
/// key when bound, the pair its rotation issued; otherwise reuse, and the
/// family is revoked.
async fn retry_or_reuse(
    cx: &Env<'_>,
    row: &RefreshRow,
    jkt: Option<&str>,
    now: i64,
) -> Result<TokenResponse, Error> {
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let grace = cx.config.refresh_grace_period;
    let in_window = row
        .rotated_at
        .is_some_and(|t| grace > 0 && now - t <= grace);
    let same_key = row
        .dpop_jkt
        .as_deref()
        .is_none_or(|bound| jkt == Some(bound));
    // Only the just-rotated token: its child must still be the family's
    // current token (SECURITY.md, "Refresh tokens": an older one is reuse).
    let child_is_current = in_window
        && store::grants::family_head(cx.db, &row.family_id)
            .await?
            .is_some_and(|head| head.generation == row.generation + 1);
    let retry = match (&row.retry_sealed, row.rotated_at) {
        (Some(sealed), Some(rotated_at)) if in_window && same_key && child_is_current => {
            let hash: [u8; 32] = row.token_hash.as_slice().try_into().unwrap_or([0u8; 32]);
            cx.tokens
                .refresh_retry_key
                .open(&hash, sealed)
                .ok()
                .and_then(|plain| serde_json::from_slice::<SealedResponse>(&plain).ok())
                .map(|r| r.into_response(now - rotated_at))
        }
        _ => None,
    };
    let Some(response) = retry else {
        reuse_detected(cx, row, now).await?;
        return Err(invalid().into());
    };
    cx.audit.record(store::audit::AuditEvent {
        at: now,
        event: "refresh_token.retried",
        client_id: Some(row.client_id.clone()),
        subject: Some(row.user_id.clone()),
        ip: None,
        detail: serde_json::json!({ "family_id": row.family_id, "generation": row.generation }),
    });
    Ok(response)
}

/// The sealed copy of a rotation's response.
#[derive(serde::Deserialize)]
struct SealedResponse {
    access_token: String,
    token_type: String,
    expires_in: i64,
    #[serde(default)]
    scope: Option<String>,
    refresh_token: Option<String>,
}

impl SealedResponse {
    /// The same pair, with `expires_in` counted from now.
    fn into_response(self, elapsed: i64) -> TokenResponse {
        TokenResponse {
            access_token: self.access_token,
            issued_token_type: None,
            token_type: if self.token_type == "DPoP" {
                "DPoP"
            } else {
                "Bearer"
            },
            expires_in: (self.expires_in - elapsed).max(1),
            scope: self.scope,
            refresh_token: self.refresh_token,
            authorization_details: None,
        }
    }
}

async fn reuse_detected(cx: &Env<'_>, row: &RefreshRow, now: i64) -> Result<(), Error> {
    store::grants::revoke_family(cx.db, &row.family_id, now).await?;
    cx.tokens.revoked();
    cx.audit.record(store::audit::AuditEvent {
        at: now,
        event: "refresh_token.reuse",
        client_id: Some(row.client_id.clone()),
        subject: Some(row.user_id.clone()),
        ip: None,
        detail: serde_json::json!({ "family_id": row.family_id, "generation": row.generation }),
    });
    tracing::warn!(client_id = %row.client_id, "refresh token reused; family revoked");
    Ok(())
}
