//! Clients whose `client_id` is the URL of their metadata document (the
//! MCP authorization spec's client ID metadata documents): fetched with
//! the SSRF guards of [`crate::fetch`], cached per the document's
//! `Cache-Control` (1 minute to 1 day; 5 minutes when it says nothing).
//! A failure is remembered for a minute, so that a hostile `client_id`
//! cannot make us fetch on every request, and concurrent requests for one
//! URL share one fetch (moka's `get_with`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::Clients;
use crate::doctor::{Step, step};
use crate::oauth::cimd;
use crate::oauth::client_kind::ClientKind;
use crate::oauth::client_metadata::RegistrationPolicy;
use crate::store::clients::ClientRecord;

/// A resolved document (or the remembered failure) and how long it holds.
#[derive(Clone)]
pub struct Resolved {
    record: Option<Arc<ClientRecord>>,
    ttl: Duration,
    /// Why the document was not accepted, and when that was decided.
    failure: Option<(Arc<str>, Instant)>,
}

/// How long a failed fetch or a refused document is remembered.
const FAILURE_TTL: Duration = Duration::from_secs(60);

struct PerEntry;

impl Expiry<String, Resolved> for PerEntry {
    fn expire_after_create(&self, _: &String, value: &Resolved, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub type DocumentCache = Cache<String, Resolved>;

pub fn cache() -> DocumentCache {
    Cache::builder()
        .max_capacity(10_000)
        .expire_after(PerEntry)
        .build()
}

/// The client a metadata document describes, or `None` when it cannot be
/// fetched or is not acceptable (the reason is logged).
pub async fn resolve(clients: &Clients, client_id: &str) -> Option<Arc<ClientRecord>> {
    clients
        .documents
        .get_with_by_ref(client_id, async {
            match fetch(clients, client_id).await {
                Ok((record, ttl)) => {
                    let detail = format!(
                        "fetched, kept for {} s: {}",
                        ttl.as_secs(),
                        crate::doctor::declared(&record.metadata)
                    );
                    clients.doctor.record(Step {
                        client_id,
                        attempt: None,
                        step: step::DOCUMENT,
                        refused: None,
                        fix: None,
                        detail: Some(&detail),
                    });
                    Resolved {
                        record: Some(Arc::new(record)),
                        ttl,
                        failure: None,
                    }
                }
                Err(why) => {
                    tracing::info!(client_id, why, "client metadata document refused");
                    let fix = format!(
                        "the client's publisher fixes the document at {client_id}; it is fetched again after {} s",
                        FAILURE_TTL.as_secs()
                    );
                    clients.doctor.record(Step {
                        client_id,
                        attempt: None,
                        step: step::DOCUMENT,
                        refused: Some(&why),
                        fix: Some(&fix),
                        detail: None,
                    });
                    Resolved {
                        record: None,
                        ttl: FAILURE_TTL,
                        failure: Some((why.into(), Instant::now())),
                    }
                }
            }
        })
        .await
        .record
}

/// Why the document at `client_id` was last refused, and how many seconds
/// remain before it is fetched again (for `Retry-After`).
pub async fn failure(clients: &Clients, client_id: &str) -> Option<(Arc<str>, u64)> {
    let resolved = clients.documents.get(client_id).await?;
    let (why, at) = resolved.failure?;
    let left = FAILURE_TTL.saturating_sub(at.elapsed()).as_secs().max(1);
    Some((why, left))
}

async fn fetch(clients: &Clients, client_id: &str) -> Result<(ClientRecord, Duration), String> {
    cimd::check_url(client_id, clients.config.insecure_fetch)?;
    let (body, max_age) = clients
        .fetcher
        .get_cacheable(client_id)
        .await
        .map_err(|e| e.to_string())?;
    let policy = RegistrationPolicy {
        scopes_supported: clients.scopes_supported.as_ref(),
        insecure_fetch: clients.config.insecure_fetch,
        grants: clients.grant_rules.as_ref(),
    };
    let metadata = cimd::parse_document(client_id, &body, &policy)?;
    let ttl = Duration::from_secs(max_age.unwrap_or(300).clamp(60, 86_400));
    let record = ClientRecord {
        client_id: client_id.to_string(),
        client_secret_hash: None,
        registration_access_token_hash: None,
        metadata,
        client_id_issued_at: clients.clock.now(),
        kind: ClientKind::MetadataDocument,
        introspects: Vec::new(),
    };
    Ok((record, ttl))
}
