//! Token Status Lists (draft-ietf-oauth-status-list §8): each list at its
//! URI, as a signed `application/statuslist+jwt` (the default) or, when
//! asked for, the unsigned `application/statuslist+json`; and the
//! aggregation of every live list (§9.3). See `crate::tokens::status`.
//!
//! Caching: each representation has a strong `ETag`, and `If-None-Match`
//! gets 304. `Cache-Control: no-cache`: an HTTP cache may keep a list but
//! must revalidate it (a 304 costs no body), so that a verifier's `ttl`
//! is the whole delay between a revocation and its refusal, never `ttl`
//! plus a cache's own freshness.

use agentauth_resource::status::{STATUS_LIST_JSON_MEDIA_TYPE, STATUS_LIST_JWT_MEDIA_TYPE};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;
use crate::state::AppState;

pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let status = &state.tokens.status;
    if !status.is_fresh(state.now()) {
        crate::state::refresh_revocations(&state).await?;
    }
    // Ids are what this server wrote: decimal, no sign, no leading zero.
    let id = match id.parse::<i64>() {
        Ok(n) if n > 0 && n.to_string() == id => n,
        _ => return Ok(not_found()),
    };
    if !status.knows(id, state.now()).await? {
        return Ok(not_found());
    }
    let Some(rendered) = status
        .render(id, &state.tokens.keys, &state.tokens.signing)
        .await?
    else {
        return Ok(not_found());
    };
    let json = wants_json(&headers);
    let (body, etag, media) = match json {
        true => (
            rendered.json.clone(),
            &rendered.json_etag,
            STATUS_LIST_JSON_MEDIA_TYPE,
        ),
        false => (
            rendered.jwt.clone(),
            &rendered.jwt_etag,
            STATUS_LIST_JWT_MEDIA_TYPE,
        ),
    };
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let mut response = match matches {
        true => StatusCode::NOT_MODIFIED.into_response(),
        false => body.into_response(),
    };
    let h = response.headers_mut();
    if !matches {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

/// §9.3: every list this server serves now.
pub async fn aggregation(State(state): State<AppState>) -> Result<Response, Error> {
    let status = &state.tokens.status;
    if !status.is_fresh(state.now()) {
        crate::state::refresh_revocations(&state).await?;
    }
    let lists: Vec<String> = status.ids().into_iter().map(|id| status.uri(id)).collect();
    let mut response = Json(json!({ "status_lists": lists })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The JSON form only when the client asks for it and not for the token.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let has = |media: &str| {
        accept.split(',').any(|m| {
            m.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(media))
        })
    };
    has(STATUS_LIST_JSON_MEDIA_TYPE) && !has(STATUS_LIST_JWT_MEDIA_TYPE)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "not_found",
            "error_description": "no such status list (retired, or never issued)"
        })),
    )
        .into_response()
}
