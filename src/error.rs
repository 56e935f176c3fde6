//! The one error type of the HTTP layer and its single mapping to the wire.
//!
//! Protocol errors are *responses* (RFC 6749 §5.2 JSON, RFC 7591 §3.2.2,
//! RFC 6750 §3): [`OAuthError`]. Backend failures are [`Error::Unavailable`]
//! (503 with `Retry-After`) or [`Error::Internal`] (500 `server_error`);
//! their cause is logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use crate::oauth::error::OAuthError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", .0.error)]
    OAuth(OAuthError),
    #[error("storage unavailable: {0}")]
    Unavailable(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
    /// More work queued than the node will hold (the signing queue is full).
    #[error("overloaded")]
    Overloaded,
}

impl From<crate::signing_pool::SignError> for Error {
    fn from(e: crate::signing_pool::SignError) -> Self {
        match e {
            crate::signing_pool::SignError::Busy => Self::Overloaded,
            crate::signing_pool::SignError::Key(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::crypto::RandomError> for Error {
    fn from(e: crate::crypto::RandomError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<OAuthError> for Error {
    fn from(e: OAuthError) -> Self {
        Self::OAuth(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<&'a str>,
}

/// Seconds a client should wait after a storage failure.
const RETRY_AFTER_UNAVAILABLE: u64 = 5;

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.error,
            error_description: self.description.as_deref(),
        };
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (status, json_no_store(&body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(nonce) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            headers.insert("dpop-nonce", nonce);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::OAuth(e) => e.into_response(),
            Error::Unavailable(cause) => {
                tracing::error!(error = %cause, "storage failure");
                let mut e = OAuthError::new(
                    503,
                    "temporarily_unavailable",
                    "storage is unavailable; retry later",
                );
                e.retry_after = Some(RETRY_AFTER_UNAVAILABLE);
                e.into_response()
            }
            Error::Overloaded => {
                tracing::warn!("signing queue full; request refused");
                let mut e = OAuthError::new(
                    503,
                    "temporarily_unavailable",
                    "the server is at capacity; retry later",
                );
                e.retry_after = Some(1);
                e.into_response()
            }
            Error::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                OAuthError::new(500, "server_error", "internal error").into_response()
            }
        }
    }
}

fn json_no_store<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| r#"{"error":"server_error"}"#.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_a_503_with_retry_after() {
        let response = Error::from(crate::signing_pool::SignError::Busy).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
