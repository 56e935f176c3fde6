//! Introspection mode (feature `remote`): after the local checks, ask the
//! authorization server whether the token is still active (RFC 7662), so
//! that a revocation or an agent's kill switch bites at this resource
//! within [`Introspector::cache_for`] instead of at the token's `exp`.
//!
//! The resource authenticates as a client the server lets introspect its
//! tokens (`agentauth client create --introspect <resource URI>`), with
//! `client_secret_basic`. Answers are cached per token for a short time;
//! a server that cannot be reached makes the request fail with
//! [`crate::ResourceError::Unavailable`] (503): the mode exists for
//! operators who prefer refusing to trusting a possibly revoked token.
//!
//! ```no_run
//! # async fn run() -> Result<(), agentauth_resource::remote::RemoteError> {
//! use agentauth_resource::introspection::Introspector;
//! let introspector =
//!     Introspector::discover("https://auth.example.com", "mcp-server", "its secret").await?;
//! assert!(!introspector.active("not a token").await?);
//! # Ok(()) }
//! ```

use std::time::Duration;

use moka::sync::Cache;

use crate::remote::{RemoteError, authorization_server_metadata, basic_authorization, http_client};

/// Asks the authorization server whether tokens are active.
pub struct Introspector {
    endpoint: String,
    authorization: String,
    http: reqwest::Client,
    answers: Cache<[u8; 32], bool>,
}

impl Introspector {
    /// An introspector for `endpoint`, authenticating as `client_id`.
    pub fn new(
        endpoint: impl Into<String>,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Self, RemoteError> {
        let endpoint = endpoint.into();
        let http = http_client(&endpoint)?;
        Ok(Self {
            endpoint,
            authorization: basic_authorization(client_id, client_secret),
            http,
            answers: Self::cache(Duration::from_secs(1)),
        })
    }

    /// The introspection endpoint named in the issuer's RFC 8414 metadata.
    pub async fn discover(
        issuer: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Self, RemoteError> {
        let (_, metadata, url) = authorization_server_metadata(issuer).await?;
        let endpoint = metadata["introspection_endpoint"]
            .as_str()
            .ok_or_else(|| RemoteError::Shape(url, "no introspection_endpoint".into()))?;
        Self::new(endpoint, client_id, client_secret)
    }

    /// How long an answer is reused (default 1 s): the longest a revoked
    /// token is still accepted here.
    pub fn cache_for(mut self, ttl: Duration) -> Self {
        self.answers = Self::cache(ttl);
        self
    }

    fn cache(ttl: Duration) -> Cache<[u8; 32], bool> {
        Cache::builder()
            .max_capacity(100_000)
            .time_to_live(ttl)
            .build()
    }

    /// RFC 7662 §2.2 `active` for `token`.
    pub async fn active(&self, token: &str) -> Result<bool, RemoteError> {
        let digest = crate::sha256(token.as_bytes());
        if let Some(answer) = self.answers.get(&digest) {
            return Ok(answer);
        }
        let fail =
            |e: &dyn std::fmt::Display| RemoteError::Fetch(self.endpoint.clone(), e.to_string());
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .finish();
        let response = self
            .http
            .post(&self.endpoint)
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| fail(&e))?;
        if !response.status().is_success() {
            return Err(fail(&response.status()));
        }
        let bytes = response.bytes().await.map_err(|e| fail(&e))?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| RemoteError::Shape(self.endpoint.clone(), e.to_string()))?;
        let active = answer["active"]
            .as_bool()
            .ok_or_else(|| RemoteError::Shape(self.endpoint.clone(), "no active member".into()))?;
        self.answers.insert(digest, active);
        Ok(active)
    }
}
