//! The token domain: our signing keys and the threads that sign with
//! them, revocations, DPoP nonces and replay, and the refresh-retry seal;
//! and [`live`], whether a token we issued still holds. The grants issue
//! tokens through it; introspection and revocation read it.

pub mod live;
pub mod status;

pub use live::{live_access_token, live_passport};

use std::sync::Arc;

use agentauth_resource::dpop::NonceKey;

use crate::agents::Agents;
use crate::clients::Clients;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::Kek;
use crate::keys::KeyRing;
use crate::replay::Replay;
use crate::revocation_cache::RevocationCache;
use crate::signing_pool::SigningPool;
use crate::store::Db;

pub struct Tokens {
    pub config: Arc<Config>,
    pub db: Db,
    pub clock: SharedClock,
    pub keys: KeyRing,
    /// RSA signing threads (one per core) behind one FIFO queue.
    pub signing: SigningPool,
    /// Revoked access-token jtis, node-local and refreshed every second.
    pub revocations: RevocationCache,
    /// Token Status Lists: the index each token names, the bits, the
    /// signed lists.
    pub status: status::StatusLists,
    /// RFC 9449 §8 nonce key, derived from the KEK (same on every node).
    pub dpop_nonces: NonceKey,
    /// DPoP `jti`s and every other single-use value.
    pub replay: Arc<Replay>,
    /// Seals the response a refresh rotation issued, for retries within
    /// the grace window (derived from the KEK: the same on every node).
    pub refresh_retry_key: Kek,
    /// SQLite allows one writer; queueing hot write transactions here
    /// instead of in SQLite's busy handler (which sleeps in steps of up to
    /// 100 ms) keeps tail latency low. Unused on PostgreSQL.
    sqlite_writer: Option<Arc<tokio::sync::Mutex<()>>>,
    /// A token is live only while its client and its agents are.
    pub clients: Arc<Clients>,
    pub agents: Arc<Agents>,
}

/// What [`Tokens::new`] is built from.
pub struct Parts {
    pub keys: KeyRing,
    pub signing: SigningPool,
    pub dpop_nonces: NonceKey,
    pub replay: Arc<Replay>,
    pub refresh_retry_key: Kek,
}

impl Tokens {
    pub fn new(
        config: Arc<Config>,
        db: Db,
        clock: SharedClock,
        parts: Parts,
        clients: Arc<Clients>,
        agents: Arc<Agents>,
    ) -> Self {
        let sqlite_writer =
            (!crate::store::is_shared(&db)).then(|| Arc::new(tokio::sync::Mutex::new(())));
        Self {
            status: status::StatusLists::new(
                status::Settings {
                    issuer: config.issuer.clone(),
                    ttl: config.status_list_ttl,
                    size: config.status_list_size,
                    max_lifetime: config.access_token_ttl.max(config.passport_ttl),
                },
                db.clone(),
                clock.clone(),
                sqlite_writer.clone(),
            ),
            sqlite_writer,
            config,
            db,
            clock,
            keys: parts.keys,
            signing: parts.signing,
            revocations: RevocationCache::default(),
            dpop_nonces: parts.dpop_nonces,
            replay: parts.replay,
            refresh_retry_key: parts.refresh_retry_key,
            clients,
            agents,
        }
    }

    /// Something was revoked on this node: introspection reads the
    /// database until its cache has it, and the status lists are read now
    /// rather than at the next tick.
    pub fn revoked(&self) {
        self.revocations.invalidate();
        self.status.wake.notify_one();
    }

    /// Held around hot write transactions on SQLite (see `sqlite_writer`).
    pub async fn write_gate(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.sqlite_writer {
            Some(m) => Some(m.lock().await),
            None => None,
        }
    }
}
