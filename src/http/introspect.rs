//! RFC 7662 token introspection, for authenticated clients (resource
//! servers). Anything that is not a live token we issued is exactly
//! `{"active":false}`, and so is a live token the caller may not learn
//! about (§4): a caller sees an access token only when it is a resource
//! in the token's `aud` (`agentauth client create --introspect URI`), and
//! refresh tokens only when it is an introspector for every token
//! (`--introspect '*'`). Agent passports are answered to the site they
//! name (`aud` holding the caller's client_id or one of its resources,
//! where that resource accepts passports: to any other a passport is no
//! credential, SECURITY.md "Passport used as an access token").
//! Tokens naming an agent report `agent_id`, `owner` and the `act` chain.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::{OAuthForm, json_no_store};
use crate::clients::Public;
use crate::error::{OAuthError, Result};
use crate::state::AppState;
use crate::store;
use crate::tokens::{live_access_token, live_passport};
use agentauth_resource::claims::{Actor, Audience, Confirmation, PASSPORT_TOKEN_TYPE};

#[derive(Serialize)]
#[serde(untagged)]
enum Introspection {
    Active(Box<ActiveToken>),
    Passport(Box<ActivePassport>),
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
struct ActivePassport {
    active: bool,
    token_type: &'static str,
    sub: String,
    agent_id: String,
    owner: String,
    agent_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    iss: String,
    exp: i64,
    iat: i64,
    jti: String,
    cnf: Confirmation,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// RFC 9396 §9.2: the approved details, as the token carries them.
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<Vec<serde_json::Value>>,
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
    let body = match live_access_token(&state.tokens, token).await? {
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
            act: claims.act,
            agent_id: claims.agent_id,
            owner: claims.owner,
            authorization_details: claims.authorization_details,
        })),
        None if token.matches('.').count() == 2 => match live_passport(&state.tokens, token).await?
        {
            Some(p)
                if everything
                    || p.aud.as_ref().is_some_and(|aud| {
                        aud.contains(caller.client_id())
                            || is_audience(&passport_sites(&state, &caller.client.introspects), aud)
                    }) =>
            {
                Introspection::Passport(Box::new(ActivePassport {
                    active: true,
                    token_type: PASSPORT_TOKEN_TYPE,
                    sub: p.sub,
                    agent_id: p.agent_id,
                    owner: p.owner,
                    agent_name: p.agent_name,
                    aud: p.aud,
                    scope: p.scope,
                    iss: p.iss,
                    exp: p.exp,
                    iat: p.iat,
                    jti: p.jti,
                    cnf: p.cnf,
                }))
            }
            _ => Introspection::Inactive { active: false },
        },
        // Refresh tokens only for introspectors of everything: nobody
        // else costs a database read.
        None if !everything => Introspection::Inactive { active: false },
        None => match store::grants::refresh(&state.db, crate::crypto::sha256(token.as_bytes()))
            .await?
        {
            Some(rt)
                if rt.rotated_at.is_none()
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

/// Of the resources a caller introspects for, those a passport may name:
/// not our resources that refuse passports (see `grants::passport`).
fn passport_sites(state: &AppState, introspects: &[String]) -> Vec<String> {
    let registry = &state.resources.registry;
    introspects
        .iter()
        .filter(|r| {
            registry
                .passport_target(r)
                .is_none_or(|resource| resource.accept_passports)
        })
        .cloned()
        .collect()
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
