//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::OAuthError;
use crate::state::AppState;
use crate::store;

pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 when the database answers, 503 otherwise.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match store::ping(&state.db).await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            let mut r = (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// Prometheus text. With `--metrics-token`, only for `Authorization:
/// Bearer <token>` (compared in constant time); anything else is a 401
/// that says nothing about the metrics.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(hash) = &state.config.metrics_token_hash {
        let presented = crate::http::bearer_token(&headers);
        if !presented.is_some_and(|t| crate::crypto::verify_secret(t, hash)) {
            let mut r = StatusCode::UNAUTHORIZED.into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="agentauth metrics""#),
            );
            return r;
        }
    }
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

pub async fn not_found() -> OAuthError {
    OAuthError::new(404, "not_found", "no such endpoint")
}
