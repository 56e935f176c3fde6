//! Who the client is. A `client_id` names a registered client (RFC 7591,
//! cached per node), or is the URL of a client ID metadata document
//! ([`document`]); [`auth`] authenticates it at the token, introspection
//! and revocation endpoints; [`jwks`] fetches the keys of `private_key_jwt`
//! clients that registered a `jwks_uri`.

pub mod auth;
pub mod document;
pub mod register;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::future::Cache;

pub use auth::{AuthenticatedClient, Basic, Public, authenticate};

use crate::agents::Agents;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::fetch::Fetcher;
use crate::fetch::jwks::Jwks;
use crate::oauth::cimd;
use crate::oauth::client_metadata::GrantRules;
use crate::oauth::scope::Scope;
use crate::replay::Replay;
use crate::store::{self, Db, StoreError, clients::ClientRecord};

/// The client domain: who a `client_id` is, and how it authenticates.
pub struct Clients {
    pub config: Arc<Config>,
    pub db: Db,
    pub clock: SharedClock,
    /// Registered clients by client_id. Stale for at most
    /// `client_cache_ttl` on other nodes (an agent's row, which holds its
    /// keys, for at most the agent status interval: [`ClientExpiry`]);
    /// invalidated at once on the node that changed the client.
    registered: Cache<String, Arc<ClientRecord>>,
    /// Clients known by a metadata document URL (or the remembered
    /// failure to fetch one), each for as long as its document allows.
    documents: document::DocumentCache,
    fetcher: Fetcher,
    /// Fetched `jwks_uri` documents by URL.
    pub jwks: Jwks,
    /// Client metadata documents fetched per source address: a cache
    /// miss spends one.
    fetch_limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// (address, document URL) pairs charged to the limiter this minute.
    fetch_charged: moka::sync::Cache<(IpAddr, String), ()>,
    /// Self-registered clients this node marked used within the hour: the
    /// mark is a database write at most daily, and this keeps even its
    /// round trip off the token path.
    pub touched: moka::sync::Cache<String, ()>,
    /// Which grants a client may register, and each one's rule: the
    /// token endpoint's registry, seen through the protocol layer's
    /// [`GrantRules`] (a metadata document is checked like a registration).
    pub grant_rules: Arc<dyn GrantRules + Send + Sync>,
    /// The scopes clients may register (`None`: any): the resource
    /// registry's.
    pub scopes_supported: Option<Scope>,
    /// Each client's recent authorization steps (the connection doctor):
    /// here because a client's trace starts at its registration or its
    /// document's fetch.
    pub doctor: crate::doctor::Doctor,
    /// An agent authenticates only while it is active.
    pub agents: Arc<Agents>,
    /// Spent client-assertion `jti`s.
    pub replay: Arc<Replay>,
}

impl Clients {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        db: Db,
        clock: SharedClock,
        fetcher: Fetcher,
        jwks: Jwks,
        grant_rules: Arc<dyn GrantRules + Send + Sync>,
        scopes_supported: Option<Scope>,
        agents: Arc<Agents>,
        replay: Arc<Replay>,
    ) -> Self {
        // Its writer ends with the clients (steps are diagnostics: a crash
        // may lose the last batch, like issuance audit events).
        let (doctor, _) = crate::doctor::Doctor::start(db.clone(), clock.clone());
        Self {
            doctor,
            registered: Cache::builder()
                .max_capacity(100_000)
                .expire_after(ClientExpiry {
                    ttl: config.client_cache_ttl,
                })
                .build(),
            documents: document::cache(),
            fetch_limiter: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(config.document_fetches_per_minute).unwrap_or(NonZeroU32::MIN),
            )),
            fetch_charged: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            touched: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            config,
            db,
            clock,
            fetcher,
            jwks,
            grant_rules,
            scopes_supported,
            agents,
            replay,
        }
    }

    /// Drops this node's cached row of a client (other nodes forget it
    /// within their cache's lifetime).
    pub async fn forget(&self, client_id: &str) {
        self.registered.invalidate(client_id).await;
    }

    /// Forgets idle rate-limit buckets.
    pub fn retain_recent(&self) {
        self.fetch_limiter.retain_recent();
        self.doctor.retain_recent();
    }
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
        Some(if crate::store::agents::is_agent_id(client_id) {
            self.ttl.min(crate::agents::STATUS_TTL)
        } else {
            self.ttl
        })
    }
}

impl Clients {
    /// Whether a request from `ip` naming `client_id` may make us fetch a
    /// metadata document: always for registered clients and documents
    /// already cached; otherwise within the address's budget of distinct
    /// documents per minute. `Err` holds the seconds to wait. Checked
    /// before the lookup, so a throttled address never poisons the cache
    /// for the document's other users.
    pub fn document_fetch_allowed(&self, client_id: &str, ip: Option<IpAddr>) -> Result<(), u64> {
        let Some(ip) = ip else { return Ok(()) };
        if !cimd::is_document_url(client_id, self.config.insecure_fetch)
            || self.documents.contains_key(client_id)
        {
            return Ok(());
        }
        // Distinct documents, not requests: concurrent or repeated
        // requests naming one document while its fetch is under way spend
        // once. `and_compute_with` runs the calls on one key one after
        // another, so exactly one of them inserts; `or_insert` does not
        // promise a single fresh winner (moka #545).
        let charged = self
            .fetch_charged
            .entry((ip, client_id.to_string()))
            .and_compute_with(|seen| match seen {
                Some(_) => moka::ops::compute::Op::Nop,
                None => moka::ops::compute::Op::Put(()),
            });
        if !matches!(charged, moka::ops::compute::CompResult::Inserted(_)) {
            return Ok(());
        }
        self.fetch_limiter.check_key(&ip).map_err(|not_until| {
            self.fetch_charged.invalidate(&(ip, client_id.to_string()));
            crate::clock::retry_after(&not_until)
        })
    }

    /// Whether `client_id` is one of ours without fetching anything: a
    /// registered client, or a metadata document this node fetched
    /// (accepted or refused) and still remembers. The connection doctor
    /// records steps only for these, so that made-up ids write nothing.
    pub async fn known(&self, client_id: &str) -> bool {
        if cimd::is_document_url(client_id, self.config.insecure_fetch) {
            return self.documents.contains_key(client_id);
        }
        matches!(self.get(client_id).await, Ok(Some(_)))
    }

    /// A client by id: from the cache, the database, or its metadata
    /// document.
    pub async fn get(&self, client_id: &str) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        if cimd::is_document_url(client_id, self.config.insecure_fetch) {
            return Ok(document::resolve(self, client_id).await);
        }
        if let Some(c) = self.registered.get(client_id).await {
            return Ok(Some(c));
        }
        let Some(record) = store::clients::get(&self.db, client_id).await? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        self.registered
            .insert(client_id.to_string(), record.clone())
            .await;
        Ok(Some(record))
    }
}
