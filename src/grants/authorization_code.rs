//! OAuth 2.1 §4.1.3 authorization code grant, with PKCE (RFC 7636),
//! resource narrowing (RFC 8707), DPoP code binding (RFC 9449 §10) and
//! replay revocation (RFC 9700 §4.5: a code used twice revokes what the
//! first use issued).

use serde_json::Value;

use super::Env;
use super::{
    AccessTokenRequest, Grant, GrantFuture, TokenRequest, TokenResponse, granted_targets,
    issue_access_token,
};
use crate::crypto::{random_id, random_token, sha256};
use crate::error::{Error, OAuthError};
use crate::oauth::client_metadata::AuthMethod;
use crate::oauth::grant_type::{AUTHORIZATION_CODE, REFRESH_TOKEN};
use crate::oauth::pkce;
use crate::oauth::scope::Scope;
use crate::store::{self, grants::RefreshRow};

pub struct AuthorizationCode;

impl Grant for AuthorizationCode {
    fn grant_type(&self) -> &'static str {
        AUTHORIZATION_CODE
    }

    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(cx, request))
    }
}

async fn run(cx: &Env<'_>, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let (client, form, proof) = (req.client, req.params, req.proof);
    let code = form.require("code")?;
    let code_hash = sha256(code.as_bytes());
    let now = req.now;
    let invalid =
        || OAuthError::invalid_grant("the authorization code is invalid, expired or already used");
    let row = store::grants::code(cx.db, code_hash)
        .await?
        .ok_or_else(invalid)?;
    // SECURITY.md, "Token endpoint: code grant": another client's code; it stays unspent.
    if row.client_id != client.client_id() {
        return Err(invalid().into());
    }
    if row.consumed_at.is_some() {
        // SECURITY.md, "Token endpoint: code grant": a replay revokes the first redemption's tokens.
        store::grants::revoke_code_issuance(cx.db, &row, now).await?;
        cx.tokens.revoked();
        tracing::warn!(client_id = %row.client_id, "authorization code replayed; its tokens were revoked");
        return Err(invalid().into());
    }
    if row.expires_at <= now {
        return Err(invalid().into());
    }
    // The user may have been deleted since (issue 12 item 3).
    if store::users::by_id(cx.db, &row.user_id).await?.is_none() {
        return Err(invalid().into());
    }
    if form
        .get("redirect_uri")
        .is_some_and(|r| r != row.redirect_uri)
    {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request",
        )
        .into());
    }
    let verifier = form
        .get("code_verifier")
        .ok_or_else(|| OAuthError::invalid_grant("code_verifier is required (PKCE)"))?;
    if !pkce::verify(verifier, &row.code_challenge) {
        return Err(
            OAuthError::invalid_grant("code_verifier does not match the code_challenge").into(),
        );
    }
    if let Some(bound) = &row.dpop_jkt {
        match proof {
            Some(p) if &p.jkt == bound => {}
            _ => {
                return Err(OAuthError::invalid_dpop_proof(
                    "the code is bound to a DPoP key (dpop_jkt); prove it",
                )
                .into());
            }
        }
    }
    let granted: Vec<String> = serde_json::from_value(row.resources.clone()).unwrap_or_default();
    let targets = granted_targets(&cx.resources.registry, form, &granted)?;
    let resources = targets.uris();
    let scope = targets.narrow(&Scope::parse(&row.scope).unwrap_or_default());
    let jkt = proof.map(|p| p.jkt.as_str());
    // RFC 9396: approved details ride in a short token with no refresh
    // token (an approval is for now; a refresh would renew it).
    let details: Option<Vec<Value>> = row
        .authorization_details
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|_| Error::Internal("an authorization code holds bad details".into()))?;
    let with_details = details.is_some();
    let mut issued = issue_access_token(
        cx,
        AccessTokenRequest {
            max_ttl: with_details.then_some(cx.config.approval_token_ttl),
            authorization_details: details,
            ..AccessTokenRequest::plain(
                AUTHORIZATION_CODE,
                &row.user_id,
                &row.client_id,
                &scope,
                &resources,
                &req,
            )
        },
    )
    .await?;
    let refresh = (!with_details && client.client.metadata.allows_grant(REFRESH_TOKEN)).then(
        || -> Result<_, Error> {
            let token = random_token()?;
            let row = RefreshRow {
                token_hash: sha256(token.as_bytes()).to_vec(),
                family_id: random_id()?,
                generation: 0,
                client_id: row.client_id.clone(),
                user_id: row.user_id.clone(),
                scope: row.scope.clone(),
                resources: Value::from(granted.clone()),
                // RFC 9449 §5: refresh tokens of public clients are bound.
                dpop_jkt: if client.method == AuthMethod::None {
                    jkt.map(str::to_string)
                } else {
                    None
                },
                created_at: now,
                expires_at: now + cx.config.refresh_token_ttl,
                rotated_at: None,
                revoked_at: None,
                access_jti: issued.jti.clone(),
                access_exp: issued.exp,
                retry_sealed: None,
            };
            Ok((token, row))
        },
    );
    let refresh = refresh.transpose()?;
    let (refresh_token, refresh_row) = refresh.unzip();
    // The one atomic step: exactly one redemption wins.
    let gate = cx.tokens.write_gate().await;
    if !store::grants::redeem_code(cx.db, code_hash, now, refresh_row, &issued.jti, issued.exp)
        .await?
    {
        // Lost a race with another redemption of the same code: that is a
        // replay too, and revokes what the winner got (RFC 9700 §4.5).
        drop(gate);
        if let Some(spent) = store::grants::code(cx.db, code_hash).await? {
            store::grants::revoke_code_issuance(cx.db, &spent, now).await?;
            cx.tokens.revoked();
        }
        tracing::warn!(client_id = %client.client_id(), "authorization code redeemed concurrently; its tokens were revoked");
        return Err(invalid().into());
    }
    issued.response.refresh_token = refresh_token;
    Ok(issued.response)
}
