//! Who the client is. A `client_id` names a registered client (RFC 7591,
//! cached per node), or is the URL of a client ID metadata document
//! ([`document`]); [`auth`] authenticates it at the token, introspection
//! and revocation endpoints; [`jwks`] fetches the keys of `private_key_jwt`
//! clients that registered a `jwks_uri`.

pub mod auth;
pub mod document;
pub mod jwks;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

pub use auth::{AuthenticatedClient, Basic, Public, authenticate};

use crate::oauth::cimd;
use crate::state::State;
use crate::store::{self, StoreError, clients::ClientRecord};

/// Registered clients by client_id. Stale for at most `ttl` on other nodes
/// (an agent's row, which holds its keys, for at most the agent status
/// interval: [`ClientExpiry`]); invalidated at once on the node that
/// changed the client.
pub fn registered_cache(ttl: Duration) -> Cache<String, Arc<ClientRecord>> {
    Cache::builder()
        .max_capacity(100_000)
        .expire_after(ClientExpiry { ttl })
        .build()
}

/// How long a node keeps a client row: `ttl`, but an agent's keys follow
/// its status (SECURITY.md, "Kill, then re-enable"): a key its owner
/// removed stops authenticating on every node within
/// [`crate::agents::STATUS_TTL`], like the kill switch.
struct ClientExpiry {
    ttl: Duration,
}

impl moka::Expiry<String, Arc<ClientRecord>> for ClientExpiry {
    fn expire_after_create(
        &self,
        client_id: &String,
        _client: &Arc<ClientRecord>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(if crate::agents::is_agent_id(client_id) {
            self.ttl.min(crate::agents::STATUS_TTL)
        } else {
            self.ttl
        })
    }
}

impl State {
    /// Whether a request from `ip` naming `client_id` may make us fetch a
    /// metadata document: always for registered clients and documents
    /// already cached; otherwise within the address's budget of distinct
    /// documents per minute. `Err` holds the seconds to wait. Checked
    /// before the lookup, so a throttled address never poisons the cache
    /// for the document's other users.
    pub fn document_fetch_allowed(&self, client_id: &str, ip: Option<IpAddr>) -> Result<(), u64> {
        let Some(ip) = ip else { return Ok(()) };
        if !cimd::is_document_url(client_id, self.config.insecure_fetch)
            || self.document_clients.contains_key(client_id)
        {
            return Ok(());
        }
        // Distinct documents, not requests: concurrent or repeated
        // requests naming one document while its fetch is under way spend
        // once. `and_compute_with` runs the calls on one key one after
        // another, so exactly one of them inserts; `or_insert` does not
        // promise a single fresh winner (moka #545).
        let charged = self
            .document_fetch_charged
            .entry((ip, client_id.to_string()))
            .and_compute_with(|seen| match seen {
                Some(_) => moka::ops::compute::Op::Nop,
                None => moka::ops::compute::Op::Put(()),
            });
        if !matches!(charged, moka::ops::compute::CompResult::Inserted(_)) {
            return Ok(());
        }
        self.document_fetch_limiter
            .check_key(&ip)
            .map_err(|not_until| {
                self.document_fetch_charged
                    .invalidate(&(ip, client_id.to_string()));
                crate::state::retry_after(&not_until)
            })
    }

    /// A client by id: from the cache, the database, or its metadata
    /// document.
    pub async fn client(&self, client_id: &str) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        if cimd::is_document_url(client_id, self.config.insecure_fetch) {
            return Ok(document::resolve(self, client_id).await);
        }
        if let Some(c) = self.clients.get(client_id).await {
            return Ok(Some(c));
        }
        let Some(record) = store::clients::get(&self.db, client_id).await? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        self.clients
            .insert(client_id.to_string(), record.clone())
            .await;
        Ok(Some(record))
    }
}
