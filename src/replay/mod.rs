//! Single-use values across every node: DPoP proof `jti`s, client and
//! workload assertion `jti`s, proof-of-work stamps. On SQLite (one node)
//! DPoP `jti`s live in this node's memory and other values in the
//! database; on PostgreSQL (many nodes) every spend goes to the database,
//! many per statement ([`batch`]).

pub mod batch;

use std::time::Duration;

use moka::future::Cache;

use crate::oauth::single_use::SpentUntil;
use crate::store::{self, Db, StoreError};

/// Where spent values are remembered.
pub enum Replay {
    Memory {
        db: Db,
        jtis: Cache<String, ()>,
    },
    /// The database decides; `seen` holds this node's recent wins, so a
    /// proof replayed to the same node is refused without a round trip.
    Database {
        batcher: batch::ReplayBatcher,
        seen: Cache<String, ()>,
    },
}

impl Replay {
    /// `jti_ttl`: how long a DPoP `jti` must be remembered in memory.
    pub fn new(db: &Db, jti_ttl: Duration, batches: batch::BatchCounters) -> Self {
        let jti_cache = || {
            Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(jti_ttl)
                .build()
        };
        if store::is_shared(db) {
            Replay::Database {
                batcher: batch::ReplayBatcher::start(db.clone(), batches),
                seen: jti_cache(),
            }
        } else {
            Replay::Memory {
                db: db.clone(),
                jtis: jti_cache(),
            }
        }
    }

    /// Spends a single-use value (an assertion's `jti`) across every node:
    /// on PostgreSQL through the batcher (many spends per statement), on
    /// SQLite with one insert (it survives a restart, which an in-memory
    /// set would not). The row is kept `until` the last second its
    /// verifier accepts the value (SECURITY.md, "Single-use retention").
    pub async fn spend_once(&self, key: String, until: SpentUntil) -> Result<bool, StoreError> {
        match self {
            Replay::Database { batcher, .. } => batcher.use_once(key, until.at()).await,
            Replay::Memory { db, .. } => store::replay::use_once(db, &key, until.at()).await,
        }
    }
}
