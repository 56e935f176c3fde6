//! RFC 9728 metadata of the resources named at `/authorize`, for the
//! consent page: the resource's own name and words for its scopes (the
//! `scope_descriptions` member the resource kit serves). Fetched through
//! the SSRF-guarded fetcher only when a signed-in owner is about to see a
//! consent page, and cached, failures included, for five minutes.

use std::sync::Arc;
use std::time::Duration;

use agentauth_resource::ProtectedResourceMetadata;
use moka::future::Cache;

use crate::resources::same_resource;
use crate::state::State;

/// A consent page waits at most this long for one resource's metadata.
const WAIT: Duration = Duration::from_millis(1500);

pub type MetadataCache = Cache<String, Option<Arc<ProtectedResourceMetadata>>>;

pub fn cache() -> MetadataCache {
    Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(300))
        .build()
}

/// The metadata `resource` publishes at its RFC 9728 §3.1 well-known URL,
/// if it publishes any that describes it (§3.3: the document's `resource`
/// must be the resource asked about).
pub async fn get(state: &State, resource: &str) -> Option<Arc<ProtectedResourceMetadata>> {
    state
        .resource_metadata
        .get_with_by_ref(resource, async {
            let url = agentauth_resource::metadata::metadata_url(resource).ok()?;
            let body = match tokio::time::timeout(WAIT, state.fetcher.get(&url)).await {
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
