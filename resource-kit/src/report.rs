//! Refusal reports (feature `remote`): when this resource refuses one of
//! the authorization server's tokens, tell the server, so that the
//! client's trace in the operator's connection doctor
//! (`/admin/clients/{id}`, `agentauth client trace ID`) shows why its
//! calls fail here, with what would fix it, instead of a silent 401.
//!
//! The resource authenticates as a client that may introspect its tokens
//! (`agentauth client create --introspect <resource URI>`; the same
//! client as introspection mode, or another). A report carries the
//! refused token (the server checks its signature and names the client
//! from it), the resource and the challenge's error code and
//! description. Reports are best effort and never on the request's path:
//! sent from a spawned task, at most [`IN_FLIGHT`] at a time, and one per
//! token and error a minute; a report that cannot be sent is dropped.
//! Requests with no token, the `use_dpop_nonce` round trip and 503s are
//! never reported: they are not the client's fault.
//!
//! ```no_run
//! # fn run() -> Result<(), agentauth_resource::remote::RemoteError> {
//! use agentauth_resource::report::Reporter;
//! let reporter = Reporter::for_issuer("https://auth.example.com", "mcp-server", "its secret")?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::ResourceError;
use crate::remote::{RemoteError, basic_authorization, http_client};

/// Reports being sent at once, at most; more are dropped.
pub const IN_FLIGHT: usize = 8;

/// Sends refusal reports to the authorization server.
pub struct Reporter {
    endpoint: String,
    authorization: String,
    http: reqwest::Client,
    /// (token, error) pairs reported within the last minute.
    sent: Cache<[u8; 32], ()>,
    in_flight: Arc<AtomicUsize>,
}

impl Reporter {
    /// A reporter posting to `endpoint`, authenticating as `client_id`.
    pub fn new(
        endpoint: impl Into<String>,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Self, RemoteError> {
        let endpoint = endpoint.into();
        Ok(Self {
            http: http_client(&endpoint)?,
            authorization: basic_authorization(client_id, client_secret),
            endpoint,
            sent: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// A reporter for the agentauth server `issuer` (`{issuer}/doctor/refusals`).
    pub fn for_issuer(
        issuer: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Self, RemoteError> {
        let endpoint = format!("{}/doctor/refusals", issuer.trim_end_matches('/'));
        Self::new(endpoint, client_id, client_secret)
    }

    /// Reports that `resource` refused `token` with `error`, in the
    /// background. Must be called inside a Tokio runtime.
    pub fn report(&self, token: &str, resource: &str, error: &ResourceError) {
        let Some((code, description, scope)) = reportable(error) else {
            return;
        };
        let mut key = token.as_bytes().to_vec();
        key.extend_from_slice(code.as_bytes());
        let digest = crate::sha256(&key);
        if self.sent.contains_key(&digest) {
            return;
        }
        let slots = &self.in_flight;
        if slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < IN_FLIGHT).then_some(n + 1)
            })
            .is_err()
        {
            return;
        }
        self.sent.insert(digest, ());
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", token)
            .append_pair("resource", resource)
            .append_pair("error", code)
            .append_pair("error_description", description);
        if let Some(scope) = scope {
            form.append_pair("scope", &scope);
        }
        let request = self
            .http
            .post(&self.endpoint)
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form.finish());
        let slots = slots.clone();
        tokio::spawn(async move {
            // Best effort: the answer changes nothing here.
            let _ = request.send().await;
            slots.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The error code, description and missing scope of a refusal worth
/// reporting.
fn reportable(error: &ResourceError) -> Option<(&'static str, &'static str, Option<String>)> {
    Some(match error {
        ResourceError::InvalidRequest(why) => ("invalid_request", *why, None),
        ResourceError::InvalidToken(why) => ("invalid_token", *why, None),
        ResourceError::InvalidDpopProof(why) => ("invalid_dpop_proof", *why, None),
        ResourceError::InsufficientScope(needed) => (
            "insufficient_scope",
            "the token lacks a scope this request needs",
            Some(needed.join(" ")),
        ),
        ResourceError::OutsideApproval(why) => ("insufficient_scope", *why, None),
        ResourceError::MissingToken
        | ResourceError::UseDpopNonce(_)
        | ResourceError::Unavailable
        | ResourceError::StatusListUnavailable { .. } => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clients_faults_are_reported() {
        assert!(reportable(&ResourceError::MissingToken).is_none());
        assert!(reportable(&ResourceError::UseDpopNonce("n".into())).is_none());
        assert!(reportable(&ResourceError::Unavailable).is_none());
        assert!(reportable(&ResourceError::StatusListUnavailable { retry_after: 3 }).is_none());
        assert_eq!(
            reportable(&ResourceError::InsufficientScope(vec![
                "a".into(),
                "b".into()
            ])),
            Some((
                "insufficient_scope",
                "the token lacks a scope this request needs",
                Some("a b".into())
            ))
        );
        assert_eq!(
            reportable(&ResourceError::InvalidToken("expired")).map(|r| r.0),
            Some("invalid_token")
        );
        // An approval token used beyond its call: the client's fault.
        assert_eq!(
            reportable(&ResourceError::OutsideApproval("other call")),
            Some(("insufficient_scope", "other call", None))
        );
    }
}
