//! Protocol errors: what a client is told, named by the RFC's own error
//! codes (RFC 6749 §5.2, RFC 6750 §3.1, RFC 7591 §3.2.2, RFC 8707 §2,
//! RFC 9449 §5 and §8). No HTTP types here: the one mapping to a response
//! is [`crate::error`].

use std::borrow::Cow;

/// An error the client is told about, named by its RFC code.
#[derive(Debug, Clone)]
pub struct OAuthError {
    /// The HTTP status the error travels with (RFC 6749 §5.2: 400, or 401
    /// for `invalid_client`); turned into an HTTP type only in
    /// [`crate::error`].
    pub status: u16,
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
        status: u16,
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
        Self::new(400, "invalid_request", description)
    }

    /// RFC 6749 §5.2 `invalid_client`: 401. The HTTP layer adds the
    /// `Basic` challenge when the client used the `Authorization` header.
    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(401, "invalid_client", description)
    }

    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "invalid_grant", description)
    }

    pub fn unauthorized_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "unauthorized_client", description)
    }

    pub fn unsupported_grant_type(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "unsupported_grant_type", description)
    }

    pub fn unsupported_token_type(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "unsupported_token_type", description)
    }

    /// RFC 8628 §3.5 (also used by the proof-of-work login grant).
    pub fn authorization_pending(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "authorization_pending", description)
    }

    /// RFC 8628 §3.5: polling faster than the interval.
    pub fn slow_down(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "slow_down", description)
    }

    /// RFC 8628 §3.5.
    pub fn access_denied(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "access_denied", description)
    }

    /// RFC 8628 §3.5.
    pub fn expired_token(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "expired_token", description)
    }

    pub fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "invalid_scope", description)
    }

    /// RFC 8707 §2 `invalid_target`.
    pub fn invalid_target(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "invalid_target", description)
    }

    /// RFC 6750 §3.1 `invalid_token`, with a `Bearer` challenge.
    pub fn invalid_token(description: impl Into<Cow<'static, str>>) -> Self {
        let description = description.into();
        let mut e = Self::new(401, "invalid_token", description.clone());
        e.challenge = Some(format!(
            r#"Bearer realm="agentauth", error="invalid_token", error_description="{}""#,
            description.replace(['"', '\\'], "'")
        ));
        e
    }

    /// RFC 9396 §5 `invalid_authorization_details`.
    pub fn invalid_authorization_details(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "invalid_authorization_details", description)
    }

    /// OpenID CIBA Core §13 `invalid_binding_message`.
    pub fn invalid_binding_message(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "invalid_binding_message", description)
    }

    /// RFC 7591 §3.2.2 `invalid_redirect_uri`.
    pub fn invalid_redirect_uri(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "invalid_redirect_uri", description)
    }

    /// RFC 7591 §3.2.2 `invalid_client_metadata`.
    pub fn invalid_client_metadata(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "invalid_client_metadata", description)
    }

    /// RFC 9449 §5 `invalid_dpop_proof` at the token endpoint.
    pub fn invalid_dpop_proof(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "invalid_dpop_proof", description)
    }

    /// RFC 9449 §8 `use_dpop_nonce`, carrying the nonce to retry with.
    pub fn use_dpop_nonce(nonce: String) -> Self {
        let mut e = Self::new(
            400,
            "use_dpop_nonce",
            "a DPoP nonce is required; retry with the one in DPoP-Nonce",
        );
        e.dpop_nonce = Some(nonce);
        e
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request",
            format!("request body larger than {limit} bytes"),
        )
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(429, "slow_down", "too many requests; retry later");
        e.retry_after = Some(retry_after.max(1));
        e
    }
}
