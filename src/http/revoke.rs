//! RFC 7009 token revocation. Unknown, foreign, expired and other
//! clients' tokens get the same 200 (§2.2: no oracle); a storage failure
//! is a 503, never a 200 that did not revoke.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ClientIp, OAuthForm};
use crate::clients::Public;
use crate::error::{OAuthError, Result};
use crate::state::AppState;
use crate::store::{self, audit::AuditEvent};
use agentauth_resource::claims::{
    ACCESS_TOKEN_TYP, AccessTokenClaims, PASSPORT_TOKEN_TYPE, PASSPORT_TYP, PassportClaims,
};

pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    // §2.1: public clients may revoke their own tokens by client_id.
    let client = super::authenticate_client(&state, &headers, &form, Public::Allowed, &ip).await?;
    let token = form.require("token")?;
    let now = state.now();
    // An agent revokes its own passports like access tokens.
    // A key this node has not loaded yet must not make a revocation a
    // silent no-op: verification reloads keys on an unknown kid.
    let passport = crate::tokens::live::verify_reloading(&state.tokens, now, || {
        state
            .tokens
            .keys
            .verify::<PassportClaims>(token, PASSPORT_TYP)
    })
    .await;
    if let Some(passport) = passport {
        if passport.iss == state.config.issuer
            && passport.agent_id == client.client_id()
            && passport.exp > now
        {
            let event = AuditEvent {
                at: now,
                event: "passport.revoked",
                client_id: Some(passport.agent_id.clone()),
                subject: Some(passport.sub.clone()),
                ip: ip.to_audit(),
                detail: json!({ "jti": passport.jti, "token_type": PASSPORT_TOKEN_TYPE }),
            };
            store::revocations::revoke_audited(
                &state.db,
                &passport.jti,
                &passport.agent_id,
                passport.exp,
                state.tokens.status.status_ref(passport.status.as_ref()),
                now,
                event,
            )
            .await?;
            state.tokens.revoked();
        }
        return Ok(ok());
    }
    let Some(claims) = crate::tokens::live::verify_reloading(&state.tokens, now, || {
        state
            .tokens
            .keys
            .verify::<AccessTokenClaims>(token, ACCESS_TOKEN_TYP)
    })
    .await
    else {
        return revoke_refresh_token(&state, client.client_id(), token, ip).await;
    };
    // §2.1: the server verifies the token was issued to the requesting client.
    if claims.iss != state.config.issuer
        || claims.client_id != client.client_id()
        || claims.exp <= now
    {
        return Ok(ok());
    }
    let event = AuditEvent {
        at: now,
        event: "token.revoked",
        client_id: Some(claims.client_id.clone()),
        subject: Some(claims.sub.clone()),
        ip: ip.to_audit(),
        detail: json!({ "jti": claims.jti, "token_type": "access_token" }),
    };
    store::revocations::revoke_audited(
        &state.db,
        &claims.jti,
        &claims.client_id,
        claims.exp,
        state.tokens.status.status_ref(claims.status.as_ref()),
        now,
        event,
    )
    .await?;
    state.tokens.revoked();
    Ok(ok())
}

/// A refresh token: revoking it revokes its family and the access tokens
/// issued with it (SECURITY.md, "Introspection and revocation").
async fn revoke_refresh_token(
    state: &crate::state::State,
    client_id: &str,
    token: &str,
    ip: super::ClientIp,
) -> Result<Response> {
    let now = state.now();
    let Some(row) =
        store::grants::refresh(&state.db, crate::crypto::sha256(token.as_bytes())).await?
    else {
        return Ok(ok());
    };
    if row.client_id != client_id {
        return Ok(ok());
    }
    store::grants::revoke_family(&state.db, &row.family_id, now).await?;
    state.tokens.revoked();
    store::audit::insert(
        &state.db,
        AuditEvent {
            at: now,
            event: "token.revoked",
            client_id: Some(row.client_id.clone()),
            subject: Some(row.user_id.clone()),
            ip: ip.to_audit(),
            detail: json!({ "family_id": row.family_id, "token_type": "refresh_token" }),
        },
    )
    .await?;
    Ok(ok())
}

fn ok() -> Response {
    let mut r = StatusCode::OK.into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}
