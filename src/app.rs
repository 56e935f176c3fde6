//! Application state and the router. `main.rs` only parses and runs.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State as AxumState};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::jwk::JwkSet;
use moka::future::Cache;
use sea_orm::DatabaseConnection;

use crate::audit::AuditSink;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::Kek;
use crate::fetch::Fetcher;
use crate::http;
use crate::keys::{KeyError, KeyRing};
use crate::metrics::{HttpLabels, Metrics, RouteLabels};
use crate::oauth::cimd;
use crate::oauth::client_metadata::RegistrationPolicy;
use agentauth_resource::dpop::NonceKey;
use crate::store::clients::ClientRecord;
use crate::store::{self, StoreError};

pub type AppState = Arc<State>;

/// Everything a handler needs, reached through axum's `State`.
pub struct State {
    pub config: Config,
    pub db: DatabaseConnection,
    pub keys: KeyRing,
    pub clock: SharedClock,
    /// Client records by client_id; stale for at most `client_cache_ttl`
    /// on other nodes, invalidated at once on this one.
    pub clients: Cache<String, Arc<ClientRecord>>,
    /// Clients known by a metadata document URL: (valid until, record or
    /// the remembered failure).
    pub document_clients: Cache<String, (std::time::Instant, Option<Arc<ClientRecord>>)>,
    /// Fetched `jwks_uri` documents by URL.
    pub client_jwks: Cache<String, (std::time::Instant, Arc<JwkSet>)>,
    pub fetcher: Fetcher,
    pub audit: AuditSink,
    pub metrics: Metrics,
    pub registration_limiter: DefaultKeyedRateLimiter<IpAddr>,
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
    /// Login attempts per username and per client IP.
    pub login_by_user: governor::DefaultKeyedRateLimiter<String>,
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
    Database(crate::replay_batch::ReplayBatcher),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("http client: {0}")]
    Fetch(String),
    #[error("signing threads: {0}")]
    Threads(#[from] std::io::Error),
}

impl State {
    pub async fn new(
        config: Config,
        db: DatabaseConnection,
        kek: Kek,
        clock: SharedClock,
    ) -> Result<(AppState, tokio::task::JoinHandle<()>), StartError> {
        let dpop_nonces = NonceKey::new(
            &kek.derive(b"agentauth dpop nonce v1"),
            config.dpop_nonce_period,
        );
        let dpop_replay = if store::is_shared(&db) {
            DpopReplay::Database(crate::replay_batch::ReplayBatcher::start(db.clone()))
        } else {
            // A jti only matters while its proof's iat is inside the window.
            let ttl =
                Duration::from_secs(u64::try_from(2 * config.dpop_iat_window + 1).unwrap_or(121));
            DpopReplay::Memory(
                Cache::builder()
                    .max_capacity(1_000_000)
                    .time_to_live(ttl)
                    .build(),
            )
        };
        let csrf_key = kek.derive(b"agentauth csrf v1");
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
        let state = State {
            metadata_json: http::metadata::document(&config).to_string(),
            clients: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.client_cache_ttl)
                .build(),
            document_clients: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(86_400))
                .build(),
            client_jwks: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            fetcher: Fetcher::new(config.insecure_fetch)
                .map_err(|e| StartError::Fetch(e.to_string()))?,
            registration_limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            metrics: Metrics::default(),
            dpop_nonces,
            dpop_replay,
            revocations: Default::default(),
            signing: crate::signing_pool::SigningPool::new(config.signing_threads)?,
            sqlite_writer: (!store::is_shared(&db)).then(|| tokio::sync::Mutex::new(())),
            templates: http::pages::templates(),
            csrf_key,
            login_by_user: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            )),
            login_by_ip: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
            )),
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

    /// A client by id, from the cache or the database.
    pub async fn client(&self, client_id: &str) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        if let Some(c) = self.clients.get(client_id).await {
            return Ok(Some(c));
        }
        if cimd::is_document_url(client_id, self.config.insecure_fetch) {
            return Ok(self.document_client(client_id).await);
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

impl State {
    /// A client whose client_id is the URL of its metadata document:
    /// fetched with the SSRF guards, cached per its `Cache-Control`
    /// (1 minute to 1 day; 5 minutes when it says nothing); failures are
    /// remembered for a minute so that a hostile client_id cannot make us
    /// fetch on every request.
    async fn document_client(&self, client_id: &str) -> Option<Arc<ClientRecord>> {
        if let Some((until, record)) = self.document_clients.get(client_id).await
            && until > std::time::Instant::now()
        {
            return record;
        }
        let record = match self.fetch_document_client(client_id).await {
            Ok((record, ttl)) => {
                let until = std::time::Instant::now() + ttl;
                let record = Some(Arc::new(record));
                self.document_clients
                    .insert(client_id.to_string(), (until, record.clone()))
                    .await;
                return record;
            }
            Err(why) => {
                tracing::info!(client_id, why, "client metadata document refused");
                None
            }
        };
        let until = std::time::Instant::now() + Duration::from_secs(60);
        self.document_clients
            .insert(client_id.to_string(), (until, record.clone()))
            .await;
        record
    }

    async fn fetch_document_client(
        &self,
        client_id: &str,
    ) -> Result<(ClientRecord, Duration), String> {
        cimd::check_url(client_id, self.config.insecure_fetch)?;
        let (body, max_age) = self
            .fetcher
            .get_cacheable(client_id)
            .await
            .map_err(|e| e.to_string())?;
        let policy = RegistrationPolicy {
            scopes_supported: self.config.scopes_supported.as_ref(),
            insecure_fetch: self.config.insecure_fetch,
        };
        let metadata = cimd::parse_document(client_id, &body, &policy)?;
        let ttl = Duration::from_secs(max_age.unwrap_or(300).clamp(60, 86_400));
        let record = ClientRecord {
            client_id: client_id.to_string(),
            client_secret_hash: None,
            registration_access_token_hash: None,
            metadata,
            client_id_issued_at: self.now(),
        };
        Ok((record, ttl))
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
            state.registration_limiter.retain_recent();
            state.login_by_user.retain_recent();
            state.login_by_ip.retain_recent();
        }
    })
}

pub fn build(state: AppState) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(http::metadata::get),
        )
        .route("/jwks.json", get(http::jwks::get))
        .route("/register", post(http::register::create))
        .route(
            "/register/{client_id}",
            get(http::register::read)
                .put(http::register::update)
                .delete(http::register::delete),
        )
        .route("/authorize", get(http::authorize::get))
        .route("/authorize/decision", post(http::authorize::decision))
        .route(
            "/login",
            get(http::account::login_form).post(http::account::login),
        )
        .route("/logout", post(http::account::logout))
        .route(
            "/signup",
            get(http::account::signup_form).post(http::account::signup),
        )
        .route("/account", get(http::account::account))
        .route("/account/revoke", post(http::account::revoke))
        .route("/token", post(http::token::post))
        .route("/introspect", post(http::introspect::post))
        .route("/revoke", post(http::revoke::post))
        .route("/healthz", get(http::ops::healthz))
        .route("/readyz", get(http::ops::readyz))
        .route("/metrics", get(http::ops::metrics))
        .fallback(http::ops::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

async fn record_metrics(
    AxumState(state): AxumState<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            method,
            status,
        })
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}
