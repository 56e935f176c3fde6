//! RFC 7517 JWK Set: current, next and retired-but-unexpired public keys.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub async fn get(State(state): State<AppState>) -> Response {
    let set = state.tokens.keys.current();
    let mut r = set.jwks_json.clone().into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", state.config.jwks_max_age))
    {
        headers.insert(header::CACHE_CONTROL, v);
    }
    r
}
