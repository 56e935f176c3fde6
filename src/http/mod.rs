//! HTTP endpoints, one file each, plus the extractors they share.

pub mod account;
pub mod authorize;
pub mod client_auth;
pub mod dpop;
pub mod introspect;
pub mod jwks;
pub mod metadata;
pub mod ops;
pub mod pages;
pub mod register;
pub mod revoke;
pub mod token;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::OAuthError;

/// Largest form body the OAuth endpoints read.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// An `application/x-www-form-urlencoded` body, parsed strictly: RFC 6749
/// §3.1 and §3.2 say parameters MUST NOT be included more than once (only
/// RFC 8707 `resource` may repeat), and a parameter sent without a value
/// is treated as omitted.
#[derive(Debug, Default)]
pub struct OAuthForm {
    pairs: Vec<(String, String)>,
}

/// Parameters that may legitimately repeat.
const REPEATABLE: [&str; 1] = ["resource"];

impl OAuthForm {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            if value.is_empty() {
                continue;
            }
            if !REPEATABLE.contains(&name.as_ref()) && pairs.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {name} is repeated"
                )));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn require(&self, name: &'static str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }
}

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let body = read_body(req, state, MAX_FORM_BYTES).await.map_err(|_| {
            OAuthError::invalid_request(format!("request body larger than {MAX_FORM_BYTES} bytes"))
        })?;
        Self::parse(&body)
    }
}

/// Reads at most `limit` bytes of body; `Err` when there are more.
pub async fn read_body<S: Send + Sync>(
    req: Request,
    _state: &S,
    limit: usize,
) -> Result<Bytes, ()> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ())
}

/// The peer address, when the server knows it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Also honours axum's MockConnectInfo, which tests install.
        Ok(Self(
            ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
                .await
                .ok()
                .map(|c| c.0.ip()),
        ))
    }
}

impl ClientIp {
    pub fn to_audit(self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

/// A JSON response that must not be cached (RFC 6749 §5.1).
pub fn json_no_store<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, body).into_response();
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The token from `Authorization: Bearer …` (RFC 6750 §2.1).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_rejects_repeats_but_allows_resource() {
        assert_eq!(
            OAuthForm::parse(b"a=1&a=2").unwrap_err().error,
            "invalid_request"
        );
        let f =
            OAuthForm::parse(b"resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb&scope=").unwrap();
        assert_eq!(f.get_all("resource").count(), 2);
        assert_eq!(f.get("scope"), None);
    }
}
