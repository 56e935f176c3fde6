//! The application state: the domain contexts (tokens, clients, agents,
//! resources), composed once at start-up, with what only the pages and
//! the edge use (templates, CSRF key, sign-in and registration limits);
//! and the background tasks that keep it fresh. The routes are in
//! [`crate::router`]. Nothing below the HTTP layer imports this module: a
//! grant reaches the contexts through [`crate::grants::Env`], a domain
//! through the contexts it holds.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use agentauth_resource::dpop::NonceKey;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::future::Cache;

use crate::agents::Agents;
use crate::agents::federation::Federation;
use crate::audit::AuditSink;
use crate::clients::Clients;
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError, ServeArgs};
use crate::crypto::Kek;
use crate::events::Events;
use crate::fetch::Fetcher;
use crate::fetch::jwks::Jwks;
use crate::grants::{Env, Registry};
use crate::keys::{KeyError, KeyRing};
use crate::metrics::Metrics;
use crate::oauth::client_metadata::GrantRules as _;
use crate::oauth::scope::{OFFLINE_ACCESS, Scope};
use crate::replay::Replay;
use crate::resources::{ResourceRegistry, Resources};
use crate::store::{self, Db, StoreError};
use crate::tokens::Tokens;

pub type AppState = Arc<State>;

/// What `serve` runs with: the parsed configuration and what the domains
/// build from it (the resource registry, the trusted issuers), all
/// checked before anything is opened.
pub struct Setup {
    pub config: Config,
    pub resources: ResourceRegistry,
    pub federation: Federation,
}

impl Setup {
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        Self::from_config(Config::from_args(args)?)
    }

    pub fn from_config(config: Config) -> Result<Self, ConfigError> {
        Ok(Self {
            resources: ResourceRegistry::from_config(&config)?,
            federation: Federation::from_config(&config)?,
            config,
        })
    }
}

/// Everything a handler needs, reached through axum's `State`.
pub struct State {
    pub config: Arc<Config>,
    pub db: Db,
    pub clock: SharedClock,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    /// The grants of the token endpoint, by `grant_type`.
    pub grants: Arc<Registry>,
    pub tokens: Arc<Tokens>,
    pub clients: Arc<Clients>,
    pub agents: Arc<Agents>,
    pub resources: Arc<Resources>,
    /// Security events pushed to registered receivers (SSF 1.0, RFC 8935).
    pub events: Arc<Events>,
    /// Backchannel approvals (CIBA): ping sealing and sending.
    pub approvals: Arc<crate::approvals::Approvals>,
    /// RFC 8414 metadata, serialized once.
    pub metadata_json: String,
    pub templates: minijinja::Environment<'static>,
    /// Key for CSRF MACs, derived from the KEK.
    pub csrf_key: [u8; 32],
    /// Failed sign-ins per `user:<name>` and `ip:<address>`, forgotten a
    /// minute after the last failure.
    pub login_failures: Cache<String, u32>,
    /// Unauthenticated writes of the sign-in pages per client IP: sign-ups
    /// and passkey sign-in ceremonies (each writes a row).
    pub login_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Dynamic registrations per client IP.
    pub registration_limiter: DefaultKeyedRateLimiter<IpAddr>,
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
        setup: Setup,
        db: Db,
        kek: Kek,
        clock: SharedClock,
    ) -> Result<(AppState, tokio::task::JoinHandle<()>), StartError> {
        let Setup {
            config,
            resources,
            federation,
        } = setup;
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::default());
        // A DPoP jti only matters while its proof's iat is inside the
        // window: first seen at `iat - window` at the earliest, it must be
        // kept until `crate::http::dpop::spent_until`, `iat + window`.
        let jti_ttl =
            Duration::from_secs(u64::try_from(2 * config.dpop_iat_window + 1).unwrap_or(121));
        let replay = Arc::new(Replay::new(&db, jti_ttl, metrics.replay_batches.clone()));
        let csrf_key = kek.derive(b"agentauth csrf v1");
        let fetcher =
            Fetcher::new(config.insecure_fetch).map_err(|e| StartError::Fetch(e.to_string()))?;
        let event_fetcher = fetcher.clone();
        let approvals = Arc::new(crate::approvals::Approvals::new(&kek, fetcher.clone())?);
        let jwks = Jwks::new(fetcher.clone());
        let grants = Arc::new(Registry::standard());
        let resources = Arc::new(Resources {
            registry: Arc::new(resources),
            metadata: crate::resources::metadata::Metadata::new(fetcher.clone()),
        });

        let bridge = crate::agents::bridge::ca::CaRing::load_or_init(
            &db,
            crate::agents::bridge::ca::ca_kek(&kek)?,
            crate::agents::bridge::ca::issuer_host(&config.issuer),
            config.ca_epoch,
            clock.now(),
        )
        .await?;
        let agents = Arc::new(Agents::new(
            config.clone(),
            db.clone(),
            clock.clone(),
            crate::agents::Parts {
                bridge,
                bridge_nonces: crate::agents::bridge::nonce::NonceMint::new(
                    &kek.derive(b"agentauth bridge nonce v1"),
                ),
                // Registration stamps have always been sealed with the CSRF key.
                stamp_key: csrf_key,
                federation,
                jwks: jwks.clone(),
                replay: replay.clone(),
            },
        ));
        // What clients may register and ask for: what the resources offer
        // and, since refresh tokens can be issued, the server's own
        // `offline_access` (SEP-2207). `None`: any scope.
        let scopes_supported = resources.registry.scopes_supported().map(|offered| {
            match grants.supports(crate::oauth::grant_type::REFRESH_TOKEN) {
                true => offered.union(&Scope::parse(OFFLINE_ACCESS).unwrap_or_default()),
                false => offered,
            }
        });
        let clients = Arc::new(Clients::new(
            config.clone(),
            db.clone(),
            clock.clone(),
            fetcher,
            jwks,
            grants.clone(),
            scopes_supported.clone(),
            agents.clone(),
            replay.clone(),
        ));

        let dpop_nonces = NonceKey::new(
            &kek.derive(b"agentauth dpop nonce v1"),
            config.dpop_nonce_period,
        );
        let refresh_retry_key = Kek::from_bytes(&kek.derive(b"agentauth refresh retry v1"))?;
        let receiver_seal_key = crate::events::receivers::seal_key(&kek)?;
        let keys = KeyRing::load_or_init(
            &db,
            kek,
            config.signing_alg,
            clock.now(),
            config.access_token_ttl,
        )
        .await?;
        let tokens = Arc::new(Tokens::new(
            config.clone(),
            db.clone(),
            clock.clone(),
            crate::tokens::Parts {
                keys,
                signing: crate::signing_pool::SigningPool::new(config.signing_threads)?,
                dpop_nonces,
                replay,
                refresh_retry_key,
            },
            clients.clone(),
            agents.clone(),
        ));

        let events = Arc::new(Events::new(
            config.clone(),
            db.clone(),
            clock.clone(),
            tokens.clone(),
            event_fetcher,
            receiver_seal_key,
        ));
        let (audit, audit_task) = AuditSink::start(db.clone());
        let per_minute =
            NonZeroU32::new(config.registration_rate_per_minute).unwrap_or(NonZeroU32::MIN);
        let state = State {
            metadata_json: crate::oauth::metadata::document(
                &config.issuer,
                scopes_supported.as_ref(),
                &grants.names(),
                match agents.federation.accepts_id_jags() {
                    true => &[crate::oauth::metadata::ID_JAG_PROFILE],
                    false => &[],
                },
                &resources.registry.details.names(),
            )
            .to_string(),
            grants,
            tokens,
            clients,
            agents,
            resources,
            events,
            approvals,
            registration_limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            templates: crate::templates::environment(),
            csrf_key,
            login_failures: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            login_by_ip: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
            )),
            metrics,
            config,
            db,
            clock,
            audit,
        };
        Ok((Arc::new(state), audit_task))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// What a grant may reach.
    pub fn grant_env(&self) -> Env<'_> {
        Env {
            config: &self.config,
            db: &self.db,
            clock: &self.clock,
            tokens: &self.tokens,
            clients: &self.clients,
            agents: &self.agents,
            resources: &self.resources,
            audit: &self.audit,
            metrics: &self.metrics,
        }
    }

    /// Drops this node's cached view of an agent: its status and its
    /// client row (which holds its keys).
    pub async fn forget_agent(&self, id: &str) {
        self.agents.forget(id).await;
        self.clients.forget(id).await;
        // A kill or a key removal revoked the agent's tokens by index.
        self.tokens.revoked();
    }
}

/// Refreshes the node-local revocation cache and status lists every
/// [`crate::tokens::status::REFRESH`], and at once after a revocation on
/// this node.
pub fn spawn_revocation_refresh(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::tokens::status::REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let wake = state.tokens.status.wake.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wake.notified() => {}
            }
            if let Err(e) = refresh_revocations(&state).await {
                tracing::warn!(error = %e, "revocation refresh failed; introspection reads the database and status lists answer 503 until it succeeds");
            }
        }
    })
}

/// One refresh: the lists first (so that a revocation in a new list finds
/// it), then the revocations, whose indexed rows set the lists' bits.
pub async fn refresh_revocations(state: &State) -> Result<(), StoreError> {
    let now = state.now();
    let status = &state.tokens.status;
    // A row of a list created (by another node) after this read is read
    // again in the next refresh: the cache reads a minute back each time,
    // and reads every unexpired row the first time.
    status.sync_lists(now).await?;
    let rows = state.tokens.revocations.refresh(&state.db, now).await?;
    status.apply(&rows);
    status.synced(now);
    Ok(())
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
                state.clients.forget(&id).await;
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
            if let Err(e) = state.tokens.keys.reload(&state.db, now).await {
                tracing::warn!(error = %e, "signing key reload failed; keeping the current keys");
            }
            if let Err(e) = store::purge_expired(&state.db, now).await {
                tracing::warn!(error = %e, "purge of expired rows failed");
            }
            reap_idle_clients(&state, now).await;
            state.registration_limiter.retain_recent();
            state.clients.retain_recent();
            state.login_by_ip.retain_recent();
            state.agents.login_limiter.retain_recent();
        }
    })
}
