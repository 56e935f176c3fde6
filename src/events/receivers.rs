//! Registering and removing event receivers: one set of rules for the
//! CLI (`agentauth receiver …`) and the operator pages.
//!
//! A receiver is an endpoint URL (https; plain http only on loopback and
//! only with the test-only insecure-fetch switch), the `aud` its SETs
//! carry, and optionally the `Authorization` header value we present when
//! pushing (SSF 1.0 §6.1.1 `authorization_header`). That value is a
//! credential we must send in clear, so it is sealed (AES-256-GCM under a
//! key derived from the KEK, the receiver id as associated data), never
//! shown again, never logged, and never put in the audit log.

use std::net::IpAddr;

use serde_json::json;
use url::{Host, Url};

use crate::crypto::{Kek, KekError};
use crate::fetch;
use crate::store::audit::AuditEvent;
use crate::store::events::NewReceiver;
use crate::store::{self, StoreError};

/// Longest endpoint URL, `aud` and authorization value accepted.
pub const MAX_URL: usize = 2_048;
pub const MAX_AUDIENCE: usize = 512;
pub const MAX_AUTHORIZATION: usize = 4_096;

/// The key that seals receivers' authorization values.
pub fn seal_key(kek: &Kek) -> Result<Kek, KekError> {
    Kek::from_bytes(&kek.derive(b"agentauth event receiver authorization v1"))
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// Bad input, said in words an operator can act on.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] crate::crypto::RandomError),
}

/// What an operator asks to register.
#[derive(Debug, Default)]
pub struct NewReceiverRequest {
    pub endpoint_url: String,
    pub audience: String,
    /// The `Authorization` header value to present; empty: none.
    pub authorization: Option<String>,
}

fn invalid(why: impl Into<String>) -> ReceiverError {
    ReceiverError::Invalid(why.into())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The endpoint rules: an absolute https URL without userinfo or
/// fragment, on a public address (a name is resolved now, and again at
/// every push by the fetcher's guard, which is what counts: DNS can
/// change). With `insecure` (tests only), any https URL, and http on
/// loopback.
pub async fn check_endpoint(text: &str, insecure: bool) -> Result<Url, ReceiverError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("the endpoint URL is required"));
    }
    if text.len() > MAX_URL {
        return Err(invalid(format!(
            "the endpoint URL is longer than {MAX_URL} characters"
        )));
    }
    let url = Url::parse(text).map_err(|e| invalid(format!("the endpoint URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "the endpoint URL must not carry a user name or password (use the authorization value)",
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid("the endpoint URL must not have a fragment"));
    }
    match (url.scheme(), insecure) {
        ("https", true) => return Ok(url),
        ("http", true) if is_loopback(&url) => return Ok(url),
        ("https", false) => {}
        _ => return Err(invalid("the endpoint URL must be https")),
    }
    fetch::check_url(&url, false)
        .map_err(|e| invalid(format!("the endpoint URL is refused: {e}")))?;
    if let Some(Host::Domain(name)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        // A name that does not resolve yet is accepted (the receiver may
        // not be deployed); one that resolves inside is not.
        if let Ok(addrs) = tokio::net::lookup_host((name, port)).await {
            let inside: Vec<IpAddr> = addrs
                .map(|a| a.ip())
                .filter(|ip| !fetch::is_public(*ip))
                .collect();
            if let Some(ip) = inside.first() {
                return Err(invalid(format!(
                    "the endpoint URL's host resolves to a non-public address ({ip})"
                )));
            }
        }
    }
    Ok(url)
}

fn check_audience(text: &str) -> Result<String, ReceiverError> {
    let aud = text.trim();
    if aud.is_empty() {
        return Err(invalid("the audience (aud) is required"));
    }
    if aud.len() > MAX_AUDIENCE || aud.chars().any(char::is_control) {
        return Err(invalid(format!(
            "the audience (aud) must be at most {MAX_AUDIENCE} characters, without control characters"
        )));
    }
    Ok(aud.to_string())
}

fn check_authorization(value: Option<&str>) -> Result<Option<String>, ReceiverError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.len() > MAX_AUTHORIZATION
        || !value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return Err(invalid(format!(
            "the authorization value must be at most {MAX_AUTHORIZATION} printable ASCII characters (an HTTP header value such as \"Bearer …\")"
        )));
    }
    Ok(Some(value.to_string()))
}

/// Checks, seals and registers a receiver, audited as `actor`; its id.
/// Events written from then on are queued for it (none from before).
pub async fn add(
    db: &store::Db,
    seal_key: &Kek,
    insecure: bool,
    request: NewReceiverRequest,
    now: i64,
    actor: &str,
    ip: Option<String>,
) -> Result<String, ReceiverError> {
    let endpoint = check_endpoint(&request.endpoint_url, insecure).await?;
    let audience = check_audience(&request.audience)?;
    let authorization = check_authorization(request.authorization.as_deref())?;
    let id = format!("rcv_{}", crate::crypto::random_id()?);
    let authorization_sealed = match &authorization {
        Some(value) => Some(seal_key.seal(id.as_bytes(), value.as_bytes())?),
        None => None,
    };
    store::events::add_receiver(
        db,
        NewReceiver {
            id: id.clone(),
            endpoint_url: endpoint.to_string(),
            audience: audience.clone(),
            authorization_sealed,
            created_at: now,
        },
        AuditEvent {
            at: now,
            event: "security_event.receiver_added",
            client_id: None,
            subject: Some(actor.to_string()),
            ip,
            // Whether there is an authorization value, never the value.
            detail: json!({ "receiver": id, "endpoint_url": endpoint.as_str(), "aud": audience,
                            "authorization": authorization.is_some() }),
        },
    )
    .await?;
    Ok(id)
}

/// Removes a receiver and its queue, audited as `actor`. `false`: none.
pub async fn remove(
    db: &store::Db,
    id: &str,
    now: i64,
    actor: &str,
    ip: Option<String>,
) -> Result<bool, ReceiverError> {
    Ok(store::events::remove_receiver(
        db,
        id,
        AuditEvent {
            at: now,
            event: "security_event.receiver_removed",
            client_id: None,
            subject: Some(actor.to_string()),
            ip,
            detail: json!({ "receiver": id }),
        },
    )
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_must_be_https_and_public() {
        for bad in [
            "",
            "not a url",
            "http://example.com/events",
            "https://127.0.0.1/events",
            "https://10.0.0.1/events",
            "https://[::1]/events",
            "https://2130706433/events",
            "https://user:pw@example.com/events",
            "https://example.com/events#x",
            "ftp://example.com/",
            "https://localhost/events",
        ] {
            assert!(check_endpoint(bad, false).await.is_err(), "{bad}");
        }
        assert!(
            check_endpoint("https://93.184.216.34/events", false)
                .await
                .is_ok()
        );
        // The test switch: loopback http, never another host's.
        assert!(
            check_endpoint("http://127.0.0.1:9/events", true)
                .await
                .is_ok()
        );
        assert!(
            check_endpoint("http://example.com/events", true)
                .await
                .is_err()
        );
    }

    #[test]
    fn audiences_and_authorization_values_are_bounded() {
        assert!(check_audience(" ").is_err());
        assert!(check_audience("a\nb").is_err());
        assert_eq!(check_audience(" https://rp/ ").unwrap(), "https://rp/");
        assert_eq!(check_authorization(Some("  ")).unwrap(), None);
        assert!(check_authorization(Some("Bearer a\r\nX-Evil: 1")).is_err());
        assert!(check_authorization(Some("Bearer é")).is_err());
        assert_eq!(
            check_authorization(Some("Bearer abc")).unwrap().as_deref(),
            Some("Bearer abc")
        );
    }
}
