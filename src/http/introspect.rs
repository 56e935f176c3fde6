//! RFC 7662 token introspection, for authenticated clients (resource
//! servers). Anything that is not a live token we issued is exactly
//! `{"active":false}`, and so is a live token the caller may not learn
//! about (§4): a caller sees an access token only when it is a resource
//! in the token's `aud` (`agentauth client create --introspect URI`), and
//! refresh tokens only when it is an introspector for every token
//! (`--introspect '*'`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::{OAuthForm, json_no_store};
use crate::clients::Public;
use crate::error::{OAuthError, Result};
use crate::state::{AppState, State as AppStateInner};
use crate::store::{self, StoreError};
use agentauth_resource::claims::{AccessTokenClaims, Audience, Confirmation};

#[derive(Serialize)]
#[serde(untagged)]
enum Introspection {
    Active(Box<ActiveToken>),
    Refresh(Box<ActiveRefresh>),
    Inactive { active: bool },
}

#[derive(Serialize)]
struct ActiveRefresh {
    active: bool,
    scope: String,
    client_id: String,
    sub: String,
    iss: String,
    exp: i64,
    iat: i64,
    token_type: &'static str,
}

#[derive(Serialize)]
struct ActiveToken {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    client_id: String,
    sub: String,
    aud: Audience,
    iss: String,
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    jti: String,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
}

pub async fn post(
    State(state): State<AppState>,
    ip: super::ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let caller = super::authenticate_client(&state, &headers, &form, Public::Refused, &ip).await?;
    let token = form.require("token")?;
    let everything = caller.client.introspects.iter().any(|r| r == "*");
    let body = match live_access_token(&state, token).await? {
        Some(claims) if !everything && !is_audience(&caller.client.introspects, &claims.aud) => {
            Introspection::Inactive { active: false }
        }
        Some(claims) => Introspection::Active(Box::new(ActiveToken {
            active: true,
            token_type: if claims.cnf.is_some() {
                "DPoP"
            } else {
                "Bearer"
            },
            scope: claims.scope,
            client_id: claims.client_id,
            sub: claims.sub,
            aud: claims.aud,
            iss: claims.iss,
            exp: claims.exp,
            iat: claims.iat,
            nbf: claims.nbf,
            jti: claims.jti,
            cnf: claims.cnf,
        })),
        None => match store::grants::refresh(&state.db, crate::crypto::sha256(token.as_bytes()))
            .await?
        {
            Some(rt)
                if everything
                    && rt.rotated_at.is_none()
                    && rt.revoked_at.is_none()
                    && rt.expires_at > state.now() =>
            {
                Introspection::Refresh(Box::new(ActiveRefresh {
                    active: true,
                    scope: rt.scope,
                    client_id: rt.client_id,
                    sub: rt.user_id,
                    iss: state.config.issuer.clone(),
                    exp: rt.expires_at,
                    iat: rt.created_at,
                    token_type: "refresh_token",
                }))
            }
            _ => Introspection::Inactive { active: false },
        },
    };
    Ok(json_no_store(StatusCode::OK, &body))
}

/// Whether the caller is one of the resources the token is for.
fn is_audience(introspects: &[String], aud: &Audience) -> bool {
    let auds: &[String] = match aud {
        Audience::One(one) => std::slice::from_ref(one),
        Audience::Many(many) => many,
    };
    introspects
        .iter()
        .any(|r| auds.iter().any(|a| crate::resources::same_resource(r, a)))
}

/// The claims of `token` if it is an access token we signed that has not
/// expired, was not revoked, and whose client still exists. A storage
/// failure is an error (fail closed), never "active".
pub async fn live_access_token(
    state: &AppStateInner,
    token: &str,
) -> std::result::Result<Option<AccessTokenClaims>, StoreError> {
    let Ok(claims) = state.keys.verify_access_token(token) else {
        return Ok(None);
    };
    let now = state.now();
    if claims.iss != state.config.issuer
        || claims.exp <= now
        || claims.nbf.is_some_and(|nbf| nbf > now)
    {
        return Ok(None);
    }
    if state
        .revocations
        .is_revoked(&state.db, &claims.jti, now)
        .await?
    {
        return Ok(None);
    }
    if state.client(&claims.client_id).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(AccessTokenClaims::clone(&claims)))
}
