//! `POST /doctor/refusals`: a resource tells us it refused one of our
//! tokens (the resource kit's `Reporter`), so that the client's trace
//! (the connection doctor) shows the last step too: "resource … refused
//! the token: insufficient_scope", with what would fix it.
//!
//! Who may report: a client that may introspect tokens for the resource
//! it names (`agentauth client create --introspect <resource>`), with
//! the same client authentication as `/introspect`. What it sends: the
//! refused token, the resource, and the RFC 6750 / RFC 9449 error it
//! answered. We check the token's signature ourselves (not its expiry or
//! audience: those may be why it was refused), so a reporter can write
//! only into the traces of clients whose tokens it was actually shown,
//! and the client named is the one that signed request, never the
//! reporter's say. The token is never stored; the trace names its
//! audience, scope and times, which are not secret.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ClientIp, OAuthForm};
use crate::clients::Public;
use crate::doctor::{Step, step};
use crate::error::{OAuthError, Result};
use crate::oauth::scope::Scope;
use crate::resources::same_resource;
use crate::state::AppState;
use agentauth_resource::claims::AccessTokenClaims;

pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let caller = super::authenticate_client(&state, &headers, &form, Public::Refused, &ip).await?;
    let resource = form.require("resource")?;
    let reports_for = |r: &String| r == "*" || same_resource(r, resource);
    if !caller.client.introspects.iter().any(reports_for) {
        return Err(OAuthError::unauthorized_client(
            "this client may not report for that resource: create it with --introspect <resource>",
        )
        .into());
    }
    let error = form.require("error")?;
    if !is_error_code(error) {
        return Err(
            OAuthError::invalid_request("error is not an RFC 6750 or RFC 9449 code").into(),
        );
    }
    // The doctor clips what it keeps and drops control characters.
    let description = form.get("error_description").unwrap_or_default();
    let needed = form.get("scope").and_then(|s| Scope::parse(s).ok());
    let token = form.require("token")?;
    let Ok(claims) = state.tokens.keys.verify_access_token(token) else {
        return Err(
            OAuthError::invalid_request("token is not an access token of this server").into(),
        );
    };
    if claims.iss != state.config.issuer || !state.clients.known(&claims.client_id).await {
        return Err(
            OAuthError::invalid_request("token is not an access token of this server").into(),
        );
    }
    let mut reason = format!("{resource} refused the token: {error}");
    if !description.is_empty() {
        reason.push_str(&format!(" ({description})"));
    }
    let fix = fix(
        &claims,
        resource,
        error,
        needed.as_ref(),
        state.now(),
        state
            .clients
            .get(&claims.client_id)
            .await?
            .map(|c| c.metadata.scope.clone()),
    );
    state.clients.doctor.record(Step {
        client_id: &claims.client_id,
        attempt: None,
        step: step::RESOURCE,
        refused: Some(&reason),
        fix: Some(&fix),
        detail: None,
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The codes a resource answers with (RFC 6750 §3.1, RFC 9449 §7.1).
fn is_error_code(error: &str) -> bool {
    matches!(
        error,
        "invalid_request" | "invalid_token" | "insufficient_scope" | "invalid_dpop_proof"
    )
}

/// What would make the resource take the client's next token, read from
/// the token itself where it tells (audience, expiry, binding, scope).
fn fix(
    claims: &AccessTokenClaims,
    resource: &str,
    error: &str,
    needed: Option<&Scope>,
    now: i64,
    registered_scope: Option<String>,
) -> String {
    if !claims.aud.iter().any(|a| same_resource(a, resource)) {
        let aud: Vec<&str> = claims.aud.iter().collect();
        return format!(
            "the token was for {}, not this resource: the client sends resource={resource} at /authorize and /token (RFC 8707)",
            aud.join(", ")
        );
    }
    if claims.exp <= now {
        return format!(
            "the token expired {} s ago: the client refreshes or gets a new one before calling (or the resource's clock runs ahead)",
            now - claims.exp
        );
    }
    match error {
        "insufficient_scope" => {
            // The resource names every scope the call needs; the token's
            // own are not the problem.
            let held: Vec<&str> = claims.scopes().collect();
            let lacking: Vec<&str> = needed
                .map(|s| s.iter().filter(|s| !held.contains(s)).collect())
                .unwrap_or_default();
            if lacking.is_empty() {
                return "the client steps up: it asks again at /authorize for the scope the 403's WWW-Authenticate names (MCP scope challenge)".to_string();
            }
            let registered = registered_scope.unwrap_or_default();
            let unregistered: Vec<&str> = lacking
                .iter()
                .copied()
                .filter(|s| !registered.is_empty() && !registered.split(' ').any(|r| r == *s))
                .collect();
            match unregistered.is_empty() {
                true => format!(
                    "the client steps up: it asks again at /authorize for scope `{}`, as the 403's WWW-Authenticate says (MCP scope challenge)",
                    lacking.join(" ")
                ),
                false => format!(
                    "the client's registration does not include scope `{}` (registered: `{registered}`): it registers it (RFC 7592 update, or a new registration), then steps up",
                    unregistered.join(" ")
                ),
            }
        }
        "invalid_dpop_proof" => {
            "the client's DPoP proof was refused: it signs a fresh proof per request with the token's key, the request's method and URL, and `ath`".to_string()
        }
        _ if claims.cnf.is_none() => {
            "if the resource takes only DPoP-bound tokens: the client sends a DPoP proof at /token (and the resource is registered with dpop = \"required\"); otherwise the token was revoked or its agent disabled".to_string()
        }
        _ => "the token was revoked, its agent disabled, or it was sent without its DPoP proof: the client gets a new token and sends it with `Authorization: DPoP` and a proof".to_string(),
    }
}
