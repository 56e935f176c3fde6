//! Everything a handler needs, built once at start-up, and the background
//! tasks that keep it fresh. The routes are in [`crate::router`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use agentauth_resource::dpop::NonceKey;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::future::Cache;

use crate::audit::AuditSink;
use crate::clients;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::Kek;
use crate::fetch::Fetcher;
use crate::grants::Registry;
use crate::keys::{KeyError, KeyRing};
use crate::metrics::Metrics;
use crate::oauth::single_use::SpentUntil;
use crate::store::clients::ClientRecord;
use crate::store::{self, Db, StoreError};

pub type AppState = Arc<State>;

/// Everything a handler needs, reached through axum's `State`.
pub struct State {
    pub config: Config,
    pub db: Db,
    /// The grants of the token endpoint, by `grant_type`.
    pub grants: Registry,
    pub keys: KeyRing,
    /// Bridge-certificate CAs by epoch (issue 16).
    pub bridge: crate::bridge::ca::CaRing,
    /// Single-use nonces that bridge-certificate proofs sign.
    pub bridge_nonces: crate::bridge::nonce::NonceMint,
    /// Which agent keys a live bridge certificate certifies, a second stale.
    pub bridge_bindings: crate::bridge::BindingCache,
    pub clock: SharedClock,
    /// Client records by client_id; stale for at most `client_cache_ttl`
    /// on other nodes, invalidated at once on this one.
    pub clients: Cache<String, Arc<ClientRecord>>,
    /// Agents by id, at most a second stale (the kill switch's bound).
    pub agents: Cache<String, Option<Arc<crate::store::agents::AgentRow>>>,
    /// Clients known by a metadata document URL (or the remembered
    /// failure to fetch one), each for as long as its document allows.
    pub document_clients: clients::document::DocumentCache,
    /// Fetched `jwks_uri` documents by URL.
    pub client_jwks: clients::jwks::JwksCache,
    /// Wakes SSE listeners of login requests (issue 15).
    pub login_hub: crate::login::LoginHub,
    /// Login requests a site may create and challenges an agent may
    /// fetch, per minute each (keys `site:<id>`, `agent:<id>`).
    pub login_limiter: governor::DefaultKeyedRateLimiter<String>,
    /// Self-registered clients this node marked used within the hour: the
    /// mark is a database write at most daily, and this keeps even its
    /// round trip off the token path.
    pub client_touched: moka::sync::Cache<String, ()>,
    /// Open login event streams per client address (SECURITY.md, "Proof-of-work login").
    pub login_streams: std::sync::Mutex<std::collections::HashMap<IpAddr, u32>>,
    /// Challenges fetched in the last minute, per site and per agent
    /// (`site:<id>`, `agent:<id>`): the difficulty rises with it.
    pub login_challenges: moka::sync::Cache<String, u64>,
    /// RFC 9728 metadata of resources, for consent pages.
    pub resource_metadata: crate::resource_metadata::MetadataCache,
    pub fetcher: Fetcher,
    pub audit: AuditSink,
    pub metrics: Metrics,
    pub registration_limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Client metadata documents fetched per source address (issue 12
    /// item 13): a cache miss spends one.
    pub document_fetch_limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// (address, document URL) pairs charged to the limiter this minute.
    pub document_fetch_charged: moka::sync::Cache<(IpAddr, String), ()>,
    /// RFC 8414 metadata, serialized once.
    pub metadata_json: String,
    /// RFC 9449 §8 nonce key, derived from the KEK (same on every node).
    pub dpop_nonces: NonceKey,
    /// DPoP `jti` replay store: this node's memory on SQLite (one node),
    /// the database on PostgreSQL (many nodes).
    pub dpop_replay: DpopReplay,
    pub templates: minijinja::Environment<'static>,
    /// Key for CSRF MACs, derived from the KEK.
    pub csrf_key: [u8; 32],
    /// Seals the response a refresh rotation issued, for retries within
    /// the grace window (derived from the KEK: the same on every node).
    pub refresh_retry_key: Kek,
    /// Failed sign-ins per `user:<name>` and `ip:<address>`, forgotten a
    /// minute after the last failure.
    pub login_failures: Cache<String, u32>,
    /// Unauthenticated writes of the sign-in pages per client IP: sign-ups
    /// and passkey sign-in ceremonies (each writes a row).
    pub login_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// SQLite allows one writer; queueing hot write transactions here
    /// instead of in SQLite's busy handler (which sleeps in steps of up to
    /// 100 ms) keeps tail latency low. Unused on PostgreSQL.
    sqlite_writer: Option<tokio::sync::Mutex<()>>,
    /// Revoked access-token jtis, node-local and refreshed every second.
    pub revocations: crate::revocation_cache::RevocationCache,
    /// RSA signing threads (one per core) behind one FIFO queue.
    pub signing: crate::signing_pool::SigningPool,
}

pub enum DpopReplay {
    Memory(Cache<String, ()>),
    /// The database decides; `seen` holds this node's recent wins, so a
    /// proof replayed to the same node is refused without a round trip.
    Database {
        batcher: crate::replay_batch::ReplayBatcher,
        seen: Cache<String, ()>,
    },
}

impl State {
    /// Spends a single-use value (an assertion's `jti`) across every node:
    /// on PostgreSQL through the DPoP replay batcher (many spends per
    /// statement), on SQLite with one insert (it survives a restart, which
    /// an in-memory set would not). The row is kept `until` the last
    /// second its verifier accepts the value (SECURITY.md, "Single-use
    /// retention").
    pub async fn spend_once(&self, key: String, until: SpentUntil) -> Result<bool, StoreError> {
        match &self.dpop_replay {
            DpopReplay::Database { batcher, .. } => batcher.use_once(key, until.at()).await,
            DpopReplay::Memory(_) => store::replay::use_once(&self.db, &key, until.at()).await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("http client: {0}")]
    Fetch(String),
    #[error(transparent)]
    Kek(#[from] crate::crypto::KekError),
    #[error("signing threads: {0}")]
    Threads(#[from] std::io::Error),
}

impl State {
    pub async fn new(
        config: Config,
        db: Db,
        kek: Kek,
        clock: SharedClock,
    ) -> Result<(AppState, tokio::task::JoinHandle<()>), StartError> {
        let dpop_nonces = NonceKey::new(
            &kek.derive(b"agentauth dpop nonce v1"),
            config.dpop_nonce_period,
        );
        // A jti only matters while its proof's iat is inside the window:
        // first seen at `iat - window` at the earliest, it must be kept
        // until `crate::http::dpop::spent_until`, `iat + window`.
        let jti_ttl =
            Duration::from_secs(u64::try_from(2 * config.dpop_iat_window + 1).unwrap_or(121));
        let jti_cache = || {
            Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(jti_ttl)
                .build()
        };
        let metrics = Metrics::default();
        let dpop_replay = if store::is_shared(&db) {
            DpopReplay::Database {
                batcher: crate::replay_batch::ReplayBatcher::start(
                    db.clone(),
                    metrics.replay_batches.clone(),
                ),
                seen: jti_cache(),
            }
        } else {
            DpopReplay::Memory(jti_cache())
        };
        let csrf_key = kek.derive(b"agentauth csrf v1");
        let bridge_nonces =
            crate::bridge::nonce::NonceMint::new(&kek.derive(b"agentauth bridge nonce v1"));
        let bridge = crate::bridge::ca::CaRing::load_or_init(
            &db,
            crate::bridge::ca::ca_kek(&kek)?,
            crate::bridge::ca::issuer_host(&config.issuer),
            config.ca_epoch,
            clock.now(),
        )
        .await?;
        let refresh_retry_key = Kek::from_bytes(&kek.derive(b"agentauth refresh retry v1"))?;
        let keys = KeyRing::load_or_init(
            &db,
            kek,
            config.signing_alg,
            clock.now(),
            config.access_token_ttl,
        )
        .await?;
        let (audit, audit_task) = AuditSink::start(db.clone());
        let per_minute =
            NonZeroU32::new(config.registration_rate_per_minute).unwrap_or(NonZeroU32::MIN);
        let grants = Registry::standard();
        let state = State {
            metadata_json: crate::oauth::metadata::document(
                &config.issuer,
                config.scopes_supported.as_ref(),
                &grants.names(),
            )
            .to_string(),
            grants,
            clients: clients::registered_cache(config.client_cache_ttl),
            agents: crate::agents::status_cache(),
            document_clients: clients::document::cache(),
            client_jwks: clients::jwks::cache(),
            resource_metadata: crate::resource_metadata::cache(),
            login_hub: Default::default(),
            login_limiter: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(config.login_rate_per_minute).unwrap_or(NonZeroU32::MIN),
            )),
            login_streams: Default::default(),
            client_touched: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(3600))
                .build(),
            login_challenges: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
            fetcher: Fetcher::new(config.insecure_fetch)
                .map_err(|e| StartError::Fetch(e.to_string()))?,
            registration_limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            document_fetch_charged: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
            document_fetch_limiter: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(config.document_fetches_per_minute).unwrap_or(NonZeroU32::MIN),
            )),
            metrics,
            dpop_nonces,
            dpop_replay,
            revocations: Default::default(),
            signing: crate::signing_pool::SigningPool::new(config.signing_threads)?,
            sqlite_writer: (!store::is_shared(&db)).then(|| tokio::sync::Mutex::new(())),
            templates: crate::templates::environment(),
            csrf_key,
            refresh_retry_key,
            login_failures: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            login_by_ip: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
            )),
            bridge,
            bridge_nonces,
            bridge_bindings: crate::bridge::binding_cache(),
            config,
            db,
            keys,
            clock,
            audit,
        };
        Ok((Arc::new(state), audit_task))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Held around hot write transactions on SQLite (see `sqlite_writer`).
    pub async fn write_gate(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.sqlite_writer {
            Some(m) => Some(m.lock().await),
            None => None,
        }
    }
}

/// Refreshes the node-local revocation cache every second.
pub fn spawn_revocation_refresh(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = state.revocations.refresh(&state.db, state.now()).await {
                tracing::warn!(error = %e, "revocation cache refresh failed; introspection reads the database");
            }
        }
    })
}

/// Whole seconds until a rate-limited key may try again (`Retry-After`).
pub fn retry_after(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    not_until
        .wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ))
        .as_secs()
        + 1
}

/// Deletes self-registered clients idle for `--idle-client-ttl`, forgets
/// them on this node at once (other nodes within their client cache
/// TTL), and audits each.
pub async fn reap_idle_clients(state: &State, now: i64) {
    if state.config.idle_client_ttl <= 0 {
        return;
    }
    let cutoff = now.saturating_sub(state.config.idle_client_ttl);
    match store::clients::reap_idle(&state.db, cutoff, now).await {
        Ok(ids) => {
            for id in ids {
                state.clients.invalidate(&id).await;
                state.audit.record(store::audit::AuditEvent {
                    at: now,
                    event: "client.reaped",
                    client_id: Some(id),
                    subject: None,
                    ip: None,
                    detail: serde_json::json!({ "idle_for_more_than": state.config.idle_client_ttl }),
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "reaping idle clients failed"),
    }
}

/// Background upkeep: reload keys (rotations by other processes), purge
/// expired replay and revocation rows, forget idle rate-limit buckets.
pub fn spawn_upkeep(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.key_reload_interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = state.now();
            if let Err(e) = state.keys.reload(&state.db, now).await {
                tracing::warn!(error = %e, "signing key reload failed; keeping the current keys");
            }
            if let Err(e) = store::purge_expired(&state.db, now).await {
                tracing::warn!(error = %e, "purge of expired rows failed");
            }
            reap_idle_clients(&state, now).await;
            state.registration_limiter.retain_recent();
            state.document_fetch_limiter.retain_recent();
            state.login_by_ip.retain_recent();
            state.login_limiter.retain_recent();
        }
    })
}
