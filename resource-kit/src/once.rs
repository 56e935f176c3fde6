//! Single use of approval tokens: a token that approves one MCP tool call
//! ([`crate::details`]) is good for that call once, whichever instance of
//! the resource sees it. The guard spends the token's `jti` in a
//! [`SpentTokens`] store just before it lets the approved call through;
//! the store answers `true` the first time only.
//!
//! [`MemorySpentTokens`] (the default) keeps spent `jti`s in this process.
//! That is enough for one instance. A resource served by several instances
//! (behind a load balancer) must share one store, or a token refused as
//! spent by one instance is accepted by the next: implement
//! [`SpentTokens`] on the database or cache they share, as one atomic
//! insert-if-absent that says whether it inserted:
//!
//! - SQL (PostgreSQL, SQLite): a table `spent_tokens (jti TEXT PRIMARY KEY,
//!   exp BIGINT NOT NULL)`; `INSERT INTO spent_tokens (jti, exp) VALUES
//!   ($1, $2) ON CONFLICT (jti) DO NOTHING`, and the first spend is the one
//!   whose statement affected one row; now and then `DELETE FROM
//!   spent_tokens WHERE exp < now` (the example MCP server's
//!   `--spent-tokens` does exactly this).
//! - Redis: `SET spent:<jti> 1 NX EXAT <exp>`, first spend when it answers
//!   `OK` (the key expires by itself).
//!
//! A read followed by a write is not enough: two instances could both
//! read "absent" and both accept. A store that cannot answer must return
//! an error, never `Ok(true)`: the guard then answers 503 with
//! `Retry-After`, and the token stays unspent for the retry.
//!
//! Keep a `jti` at least until the token can no longer be accepted: the
//! guard passes `exp` plus its verifier's clock leeway, not the bare `exp`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

/// Why a [`SpentTokens`] store could not answer (its database is down,
/// or it is full): the guard answers 503 and does not let the call
/// through.
#[derive(Debug, thiserror::Error)]
#[error("spent-token store: {0}")]
pub struct SpendError(pub Box<dyn std::error::Error + Send + Sync>);

impl SpendError {
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// The future [`SpentTokens::spend`] returns.
pub type SpendFuture<'a> = Pin<Box<dyn Future<Output = Result<bool, SpendError>> + Send + 'a>>;

/// Where spent approval tokens are recorded. One store per issuer: `jti`
/// is unique among one issuer's tokens.
pub trait SpentTokens: Send + Sync {
    /// Records `jti` as spent until `exp` (Unix seconds): `Ok(true)` the
    /// first time, `Ok(false)` every later time until then, atomically (of
    /// concurrent spends of one `jti`, exactly one gets `true`). After
    /// `exp` the store may forget it.
    fn spend<'a>(&'a self, jti: &'a str, exp: i64) -> SpendFuture<'a>;
}

/// Spent `jti`s in this process's memory, each kept until its `exp`.
/// Bounded without eviction: an entry is never dropped before its `exp`
/// (a dropped entry would let its token be used again); when `capacity`
/// live entries are held, [`SpentTokens::spend`] fails (503) instead.
pub struct MemorySpentTokens {
    spent: Cache<String, Duration>,
    capacity: u64,
}

/// The default capacity of [`MemorySpentTokens`]: a million tokens (some
/// 100 MB at most; approval tokens live five minutes, and each needs an
/// owner's approval).
pub const DEFAULT_CAPACITY: u64 = 1_000_000;

impl Default for MemorySpentTokens {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

/// A cache entry lives for the retention it was stored with: until a
/// spent token's `exp` here, for a DPoP proof's replay window in
/// [`crate::verifier`].
pub(crate) struct KeptFor;

impl moka::Expiry<String, Duration> for KeptFor {
    fn expire_after_create(
        &self,
        _key: &String,
        retention: &Duration,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(*retention)
    }
}

impl MemorySpentTokens {
    /// A store that holds at most about `capacity` live entries (moka's
    /// count lags its writes a little).
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            spent: Cache::builder().expire_after(KeptFor).build(),
            capacity,
        }
    }

    /// [`SpentTokens::spend`], synchronously, at `now` (Unix seconds).
    pub fn spend_at(&self, jti: &str, exp: i64, now: i64) -> Result<bool, SpendError> {
        if self.spent.contains_key(jti) {
            return Ok(false);
        }
        if self.spent.entry_count() >= self.capacity {
            // Drop the expired entries before giving up.
            self.spent.run_pending_tasks();
            if self.spent.entry_count() >= self.capacity {
                return Err(SpendError::new("the in-memory spent-token store is full"));
            }
        }
        // At least a second, so that a token spent at its last second is
        // still held while a concurrent request checks it.
        let retention = Duration::from_secs(u64::try_from(exp.saturating_sub(now)).unwrap_or(0))
            .max(Duration::from_secs(1));
        let spent = self.spent.entry(jti.to_string()).and_compute_with(|seen| {
            if seen.is_some() {
                Op::Nop
            } else {
                Op::Put(retention)
            }
        });
        Ok(matches!(spent, CompResult::Inserted(_)))
    }
}

impl SpentTokens for MemorySpentTokens {
    fn spend<'a>(&'a self, jti: &'a str, exp: i64) -> SpendFuture<'a> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Box::pin(std::future::ready(self.spend_at(jti, exp, now)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_jti_is_spent_once() {
        let store = MemorySpentTokens::default();
        assert!(store.spend_at("a", NOW + 300, NOW).unwrap());
        assert!(!store.spend_at("a", NOW + 300, NOW).unwrap());
        assert!(!store.spend_at("a", NOW + 300, NOW + 10).unwrap());
        assert!(store.spend_at("b", NOW + 300, NOW).unwrap());
    }

    /// Of many concurrent spends of one jti, exactly one wins.
    #[test]
    fn concurrent_spends_have_one_winner() {
        let store = std::sync::Arc::new(MemorySpentTokens::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|i| store.spend_at(&format!("j{i}"), NOW + 300, NOW).unwrap())
                        .count()
                })
            })
            .collect();
        let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(won, 100);
    }

    /// Full of live entries, the store refuses to answer rather than
    /// forget one.
    #[test]
    fn a_full_store_fails_closed() {
        let store = MemorySpentTokens::with_capacity(2);
        assert!(store.spend_at("a", NOW + 300, NOW).unwrap());
        assert!(store.spend_at("b", NOW + 300, NOW).unwrap());
        store.spent.run_pending_tasks();
        assert!(store.spend_at("c", NOW + 300, NOW).is_err());
        // What was spent stays spent.
        assert!(!store.spend_at("a", NOW + 300, NOW).unwrap());
    }

    /// An entry goes at its `exp` (moka's clock cannot be injected, so
    /// this waits a second).
    #[tokio::test]
    async fn entries_expire_at_exp() {
        let store = MemorySpentTokens::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(store.spend("short", now).await.unwrap());
        assert!(store.spend("long", now + 300).await.unwrap());
        assert!(!store.spend("short", now).await.unwrap());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        store.spent.run_pending_tasks();
        assert!(!store.spent.contains_key("short"));
        assert!(!store.spend("long", now + 300).await.unwrap());
    }
}
