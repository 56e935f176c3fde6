//! The one error type of the HTTP layer and its single mapping to the wire.
//!
//! Protocol errors are *responses* (RFC 6749 §5.2 JSON, RFC 7591 §3.2.2,
//! RFC 6750 §3): [`OAuthError`]. Backend failures are [`Error::Unavailable`]
//! (503 with `Retry-After`) or [`Error::Internal`] (500 `server_error`);
//! their cause is logged, never sent.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// An error the client is told about, named by its RFC code.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: Option<Cow<'static, str>>,
    /// `WWW-Authenticate` challenge, for 401s.
    pub challenge: Option<String>,
    /// `Retry-After`, for 429s.
    pub retry_after: Option<u64>,
    /// `DPoP-Nonce` (RFC 9449 §8), with `use_dpop_nonce`.
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            error,
            description: Some(description.into()),
            challenge: None,
            retry_after: None,
            dpop_nonce: None,
        }
    }

    /// RFC 6749 §5.2 `invalid_request`.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// RFC 6749 §5.2 `invalid_client`: 401 with a `Basic` challenge
    /// (RFC 7235 requires a challenge on every 401).
    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description);
        e.challenge = Some(r#"Basic realm="agentauth", charset="UTF-8""#.into());
        e
    }

    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub fn unauthorized_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
    }

    pub fn unsupported_grant_type(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }

    pub fn unsupported_token_type(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            description,
        )
    }

    pub fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    /// RFC 8707 §2 `invalid_target`.
    pub fn invalid_target(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", description)
    }

    /// RFC 6750 §3.1 `invalid_token`, with a `Bearer` challenge.
    pub fn invalid_token(description: impl Into<Cow<'static, str>>) -> Self {
        let description = description.into();
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            description.clone(),
        );
        e.challenge = Some(format!(
            r#"Bearer realm="agentauth", error="invalid_token", error_description="{}""#,
            description.replace(['"', '\\'], "'")
        ));
        e
    }

    /// RFC 7591 §3.2.2 `invalid_redirect_uri`.
    pub fn invalid_redirect_uri(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_redirect_uri", description)
    }

    /// RFC 7591 §3.2.2 `invalid_client_metadata`.
    pub fn invalid_client_metadata(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            description,
        )
    }

    /// RFC 9449 §5 `invalid_dpop_proof` at the token endpoint.
    pub fn invalid_dpop_proof(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", description)
    }

    /// RFC 9449 §8 `use_dpop_nonce`, carrying the nonce to retry with.
    pub fn use_dpop_nonce(nonce: String) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "use_dpop_nonce",
            "a DPoP nonce is required; retry with the one in DPoP-Nonce",
        );
        e.dpop_nonce = Some(nonce);
        e
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("request body larger than {limit} bytes"),
        )
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "too many requests; retry later",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }
}

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
        let mut response = (self.status, json_no_store(&body)).into_response();
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
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "storage is unavailable; retry later",
                );
                e.retry_after = Some(RETRY_AFTER_UNAVAILABLE);
                e.into_response()
            }
            Error::Overloaded => {
                tracing::warn!("signing queue full; request refused");
                let mut e = OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the server is at capacity; retry later",
                );
                e.retry_after = Some(1);
                e.into_response()
            }
            Error::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                OAuthError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error",
                )
                .into_response()
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
