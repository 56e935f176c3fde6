//! Outbound HTTP for documents clients point us at (`jwks_uri`; later,
//! client ID metadata documents), with SSRF guards (RFC 7591 §5,
//! SECURITY.md, "Registration and client metadata documents"): https only; every address the name resolves to must
//! be public, and the connection goes only to those checked addresses; no
//! redirects; a size and a time limit.

pub mod jwks;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
pub const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("URL not allowed: {0}")]
    Forbidden(&'static str),
    #[error("fetch failed: {0}")]
    Http(String),
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("status {0}")]
    Status(u16),
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    insecure: bool,
}

impl Fetcher {
    /// `insecure` allows http and non-public addresses: tests only.
    pub fn new(insecure: bool) -> Result<Self, FetchError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .no_proxy()
            .user_agent(concat!("agentauth/", env!("CARGO_PKG_VERSION")));
        if !insecure {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let client = builder
            .build()
            .map_err(|e| FetchError::Http(e.to_string()))?;
        Ok(Self { client, insecure })
    }

    /// GETs `url` and returns at most [`MAX_DOCUMENT_BYTES`] of body.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        self.get_cacheable(url).await.map(|(body, _)| body)
    }

    /// Like [`Fetcher::get`], also returning the `Cache-Control: max-age`
    /// the server sent (`no-store`/`no-cache` count as 0).
    pub async fn get_cacheable(&self, url: &str) -> Result<(Vec<u8>, Option<u64>), FetchError> {
        let parsed = Url::parse(url).map_err(|_| FetchError::Forbidden("not a URL"))?;
        self.check_url(&parsed)?;
        let mut response = self
            .client
            .get(parsed)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(cache_max_age);
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age.flatten()))
    }

    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        check_url(url, self.insecure)
    }

    /// POSTs `body` to `url` with the same guards as [`Fetcher::get`]
    /// (https, public addresses only, checked when connecting; no
    /// redirects; the time limit) and answers the status and at most
    /// [`MAX_DOCUMENT_BYTES`] of the response body, whatever the status.
    /// `authorization` is sent as the `Authorization` header, marked
    /// sensitive so that no debug output shows it.
    pub async fn post(
        &self,
        url: &str,
        content_type: &'static str,
        accept: &'static str,
        authorization: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        let parsed = Url::parse(url).map_err(|_| FetchError::Forbidden("not a URL"))?;
        self.check_url(&parsed)?;
        let mut request = self
            .client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::ACCEPT, accept)
            .body(body);
        if let Some(value) = authorization {
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| FetchError::Forbidden("authorization is not a header value"))?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let mut response = request.send().await.map_err(|e| {
            // reqwest's error names the URL, never the headers.
            FetchError::Http(error_chain(&e))
        })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = MAX_DOCUMENT_BYTES.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_DOCUMENT_BYTES {
                break;
            }
        }
        Ok((status, body))
    }
}

/// An error and its causes on one line ("error sending request: …:
/// connection refused"), for operators reading why a push failed.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// What a URL must be for [`Fetcher`] to fetch it, as far as can be told
/// without resolving its name: also checked at start for URLs the
/// configuration names (a federation issuer's `jwks_uri`).
pub fn check_url(url: &Url, insecure: bool) -> Result<(), FetchError> {
    if insecure {
        return match url.scheme() {
            "https" | "http" => Ok(()),
            _ => Err(FetchError::Forbidden("scheme must be https")),
        };
    }
    if url.scheme() != "https" {
        return Err(FetchError::Forbidden("scheme must be https"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(FetchError::Forbidden(
            "userinfo and fragments are not allowed",
        ));
    }
    // IP literals never reach the resolver, so check them here. The URL
    // parser already turned forms like `https://2130706433` into 127.0.0.1.
    match url.host() {
        Some(Host::Ipv4(ip)) if !is_public(IpAddr::V4(ip)) => {
            Err(FetchError::Forbidden("non-public address"))
        }
        Some(Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => {
            Err(FetchError::Forbidden("non-public address"))
        }
        Some(_) => Ok(()),
        None => Err(FetchError::Forbidden("no host")),
    }
}

/// `max-age` from a Cache-Control value; `no-store`/`no-cache` mean 0.
fn cache_max_age(value: &str) -> Option<u64> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse().ok();
        }
    }
    max_age
}

/// Resolves names and keeps only public addresses; a name with any
/// non-public address is refused whole (no mixed answers to race).
struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
                return Err(format!("{host} resolves to a non-public address").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Globally routable unicast only.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg = v6.segments();
            let nat64 = seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0];
            if nat64 {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)
                || seg[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "1.1.1.1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn refuses_literal_private_urls_and_http() {
        let f = Fetcher::new(false).unwrap();
        for url in [
            "http://example.com/jwks",
            "https://127.0.0.1/jwks",
            "https://2130706433/jwks",
            "https://[::1]/jwks",
            "https://[::ffff:7f00:1]/jwks",
            "https://user@example.com/jwks",
        ] {
            assert!(f.check_url(&Url::parse(url).unwrap()).is_err(), "{url}");
        }
        assert!(
            f.check_url(&Url::parse("https://example.com/jwks").unwrap())
                .is_ok()
        );
    }
}
