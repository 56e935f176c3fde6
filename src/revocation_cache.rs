//! A node-local copy of the revoked access-token `jti`s, so that
//! introspection needs no database round trip.
//!
//! The copy is refreshed every second with the rows revoked since the last
//! refresh (with a 60-second overlap, so that another node's clock running
//! behind cannot hide a row). It is trusted only while fresh: after a
//! revocation on this node, or when refreshes have failed for more than
//! [`FRESH_FOR`] seconds, lookups go to the database again, which fails
//! closed (503) when the database is down. Another node's revocation is
//! seen within about a second.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::store::Db;

use crate::store::revocations::Revoked;
use crate::store::{self, StoreError};

/// Seconds a refresh stays trusted.
pub const FRESH_FOR: i64 = 3;
const OVERLAP: i64 = 60;

#[derive(Default)]
pub struct RevocationCache {
    /// jti → expires_at.
    revoked: RwLock<HashMap<String, i64>>,
    /// Highest `revoked_at` seen.
    watermark: AtomicI64,
    /// When the last successful refresh started. Zero or negative: not
    /// fresh (never refreshed, or invalidated; each invalidation stores a
    /// new negative value so that a refresh racing with it cannot publish).
    fresh_at: AtomicI64,
    invalidations: AtomicI64,
}

impl RevocationCache {
    /// Pulls new revocations and drops expired ones; returns the rows read
    /// (for the status lists, which mark their bits from them).
    pub async fn refresh(&self, db: &Db, now: i64) -> Result<Vec<Revoked>, StoreError> {
        // A revocation committed after this point invalidates, changing
        // `fresh_at`; the compare-and-swap below then leaves the cache stale.
        let seen = self.fresh_at.load(Ordering::Acquire);
        let since = self.watermark.load(Ordering::Acquire) - OVERLAP;
        let rows = store::revocations::since(db, since).await?;
        let mut max = self.watermark.load(Ordering::Acquire);
        if let Ok(mut map) = self.revoked.write() {
            map.retain(|_, exp| *exp > now);
            for r in &rows {
                max = max.max(r.revoked_at);
                if r.expires_at > now {
                    map.insert(r.jti.clone(), r.expires_at);
                }
            }
        }
        self.watermark.store(max, Ordering::Release);
        let _ =
            self.fresh_at
                .compare_exchange(seen, now.max(1), Ordering::AcqRel, Ordering::Acquire);
        Ok(rows)
    }

    /// Something was revoked on this node: use the database until the next
    /// refresh has it.
    pub fn invalidate(&self) {
        let n = self.invalidations.fetch_add(1, Ordering::AcqRel) + 1;
        self.fresh_at.store(-n, Ordering::Release);
    }

    /// Whether lookups are answered from memory right now.
    pub fn is_fresh(&self, now: i64) -> bool {
        let at = self.fresh_at.load(Ordering::Acquire);
        at > 0 && now - at <= FRESH_FOR
    }

    pub async fn is_revoked(&self, db: &Db, jti: &str, now: i64) -> Result<bool, StoreError> {
        if self.is_fresh(now)
            && let Ok(map) = self.revoked.read()
        {
            return Ok(map.contains_key(jti));
        }
        store::revocations::is_revoked(db, jti).await
    }
}
