//! The JWK Sets of `private_key_jwt` clients that registered a `jwks_uri`
//! (RFC 7591 §2), fetched with the SSRF guards and kept for five minutes.
//! Concurrent requests for one URL share one fetch; a verification miss
//! may refetch once the cached copy is [`REFETCH_AFTER`] old (the client
//! may have rotated its keys), never more often.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use moka::future::Cache;

use super::Fetcher;
use crate::oauth::error::OAuthError;

/// Minimum age of a cached document before a miss may refetch it.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// Fetched JWK Sets by URL; clones share one cache (client `jwks_uri`s
/// and federated issuers' keys alike).
#[derive(Clone)]
pub struct Jwks {
    cache: Cache<String, (Instant, Arc<JwkSet>)>,
    fetcher: Fetcher,
}

impl Jwks {
    pub fn new(fetcher: Fetcher) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            fetcher,
        }
    }

    /// The keys at `uri`; with `refresh`, refetched unless fetched recently.
    pub async fn get(&self, uri: &str, refresh: bool) -> Result<Arc<JwkSet>, OAuthError> {
        get(self, uri, refresh).await
    }
}

async fn get(jwks: &Jwks, uri: &str, refresh: bool) -> Result<Arc<JwkSet>, OAuthError> {
    if refresh
        && let Some((fetched, _)) = jwks.cache.get(uri).await
        && fetched.elapsed() >= REFETCH_AFTER
    {
        jwks.cache.invalidate(uri).await;
    }
    jwks.cache
        .try_get_with_by_ref(uri, async {
            let body = jwks.fetcher.get(uri).await.map_err(|e| {
                tracing::info!(jwks_uri = uri, error = %e, "client jwks_uri fetch failed");
                OAuthError::invalid_client("the client's jwks_uri could not be fetched")
            })?;
            let keys: JwkSet = serde_json::from_slice(&body).map_err(|_| {
                OAuthError::invalid_client("the client's jwks_uri is not a JWK Set")
            })?;
            Ok::<_, OAuthError>((Instant::now(), Arc::new(keys)))
        })
        .await
        .map(|(_, keys)| keys)
        .map_err(|e: Arc<OAuthError>| OAuthError::clone(&e))
}
