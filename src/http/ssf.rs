//! `GET /.well-known/ssf-configuration`: OpenID Shared Signals Framework
//! 1.0 §7.1 transmitter configuration metadata.
//!
//! Only what is served is advertised: receivers are registered by an
//! operator (CLI or operator pages), not through the stream management
//! API (SSF 1.0 §8), so `configuration_endpoint`, `status_endpoint`,
//! `add_subject_endpoint`, `remove_subject_endpoint`,
//! `verification_endpoint` and `authorization_schemes` are left out.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// The document (SSF 1.0 §7.1): `issuer` is byte for byte the `iss` of
/// our SETs; `jwks_uri` holds the keys that sign them.
pub fn document(issuer: &str) -> serde_json::Value {
    json!({
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks.json"),
        "delivery_methods_supported": [crate::events::PUSH_METHOD],
    })
}

pub async fn get(State(state): State<AppState>) -> Response {
    let mut r = document(&state.config.issuer).to_string().into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}
