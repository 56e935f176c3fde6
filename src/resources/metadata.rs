//! RFC 9728 metadata of the resources named at `/authorize`, for the
//! consent page: the resource's own name and words for its scopes (the
//! `scope_descriptions` member the resource kit serves). Fetched through
//! the SSRF-guarded fetcher only when a signed-in owner is about to see a
//! consent page, and cached, failures included, for five minutes.

use std::sync::Arc;
use std::time::Duration;

use agentauth_resource::ProtectedResourceMetadata;
use moka::future::Cache;

use crate::fetch::Fetcher;
use crate::resources::same_resource;

/// A consent page waits at most this long for one resource's metadata.
const WAIT: Duration = Duration::from_millis(1500);

/// Fetched metadata (or the remembered lack of it) by resource URI.
pub struct Metadata {
    cache: Cache<String, Option<Arc<ProtectedResourceMetadata>>>,
    fetcher: Fetcher,
}

impl Metadata {
    pub fn new(fetcher: Fetcher) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            fetcher,
        }
    }

    /// See [`get`].
    pub async fn get(&self, resource: &str) -> Option<Arc<ProtectedResourceMetadata>> {
        get(self, resource).await
    }
}

/// The metadata `resource` publishes at its RFC 9728 §3.1 well-known URL,
/// if it publishes any that describes it (§3.3: the document's `resource`
/// must be the resource asked about).
async fn get(metadata: &Metadata, resource: &str) -> Option<Arc<ProtectedResourceMetadata>> {
    metadata
        .cache
        .get_with_by_ref(resource, async {
            let url = agentauth_resource::metadata::metadata_url(resource).ok()?;
            let body = match tokio::time::timeout(WAIT, metadata.fetcher.get(&url)).await {
                Ok(Ok(body)) => body,
                Ok(Err(e)) => {
                    tracing::debug!(resource, error = %e, "resource metadata fetch failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(resource, "resource metadata fetch timed out");
                    return None;
                }
            };
            let metadata: ProtectedResourceMetadata = serde_json::from_slice(&body).ok()?;
            same_resource(&metadata.resource, resource).then(|| Arc::new(metadata))
        })
        .await
}
