//! Security events for sessions (issue 31 item 4): an OpenID Shared
//! Signals Framework 1.0 transmitter that pushes CAEP 1.0 events as SETs
//! (RFC 8417) to receivers an operator registered, by RFC 8935 push.
//!
//! The outbox is written by the store, in the transaction of each change
//! that ends sessions (`store::events`); this module signs and pushes it:
//!
//! - a SET is `typ: secevent+jwt`, signed by our token keys, with `iss`,
//!   `iat` (when the change happened), `jti` (fixed in the outbox, the
//!   same on every attempt), `aud` (the receiver's), `txn`, `sub_id` and
//!   `events`; never `sub` nor `exp` (SSF 1.0 §4.1.2, §4.1.3, §4.1.6);
//! - RFC 8935 §2: a POST with `Content-Type: application/secevent+jwt`;
//!   202 is delivered (the row goes); 400 with an RFC 8935 §2.3 error
//!   (`{"err": …, "description": …}`) refuses that SET for good (the row
//!   stays `failed` with the reason); anything else (5xx, a 400 without
//!   an `err`, a timeout, a refused connection, an address the SSRF guard
//!   refuses) is retried with exponential backoff and jitter from 1 s to
//!   5 minutes, per receiver, until the SET is [`MAX_AGE_SECS`] old;
//! - each node's worker wakes when this node enqueues ([`Events::wake`])
//!   or, on PostgreSQL, when any node or the CLI commits an enqueue
//!   (`LISTEN`), and polls every [`POLL`] otherwise (a CLI on SQLite).

pub mod receivers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::Kek;
use crate::fetch::Fetcher;
use crate::store::events::Claimed;
use crate::store::{self, Db, StoreError};
use crate::tokens::Tokens;

/// RFC 8417 §2.3 explicit typing.
pub const SET_TYP: &str = "secevent+jwt";
/// RFC 8935 §2 media type of a pushed SET.
pub const SET_CONTENT_TYPE: &str = "application/secevent+jwt";
/// SSF 1.0 §6.1.1 push delivery method.
pub const PUSH_METHOD: &str = "urn:ietf:rfc:8935";

/// How often a worker looks for rows nobody woke it for.
pub const POLL: Duration = Duration::from_millis(500);
/// A claimed row is this node's for this long (a push times out after
/// 3 s): a node killed mid-push leaves its rows to others after it.
pub const LEASE_MS: i64 = 15_000;
/// Rows claimed at once.
pub const BATCH: u64 = 64;
/// First retry after about a second, doubling up to five minutes.
pub const BACKOFF_BASE_MS: i64 = 1_000;
pub const BACKOFF_CAP_MS: i64 = 300_000;
/// An undelivered SET older than this is marked failed (three days).
pub const MAX_AGE_SECS: i64 = 3 * 86_400;
/// How often expired rows are looked for.
const SWEEP: Duration = Duration::from_secs(60);

/// The events context: what the worker and the operator pages need.
pub struct Events {
    pub config: Arc<Config>,
    pub db: Db,
    pub clock: SharedClock,
    tokens: Arc<Tokens>,
    fetcher: Fetcher,
    /// Seals and opens receivers' authorization values.
    pub seal_key: Kek,
    wake: Notify,
}

/// What one push came to.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// RFC 8935 §2.3: the receiver refused this SET.
    Refused(String),
    /// Worth trying again later.
    Retry(String),
    /// Not attempted (this node could not sign now): give the row back.
    NotNow(String),
}

impl Events {
    pub fn new(
        config: Arc<Config>,
        db: Db,
        clock: SharedClock,
        tokens: Arc<Tokens>,
        fetcher: Fetcher,
        seal_key: Kek,
    ) -> Self {
        Self {
            config,
            db,
            clock,
            tokens,
            fetcher,
            seal_key,
            wake: Notify::new(),
        }
    }

    /// Wakes this node's worker: call after committing a change that may
    /// have written SETs. A wake with nobody waiting is kept for the
    /// worker's next wait, so none is lost.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claims due rows and pushes them; the number claimed.
    pub async fn deliver_due(self: &Arc<Self>) -> Result<usize, StoreError> {
        let claimed = store::events::claim(&self.db, self.clock.now_ms(), LEASE_MS, BATCH).await?;
        let n = claimed.len();
        // One group per receiver, oldest first.
        let mut groups: Vec<Vec<Claimed>> = Vec::new();
        for c in claimed {
            match groups
                .iter_mut()
                .find(|g| g.first().is_some_and(|f| f.receiver.id == c.receiver.id))
            {
                Some(g) => g.push(c),
                None => groups.push(vec![c]),
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for group in groups {
            let me = self.clone();
            tasks.spawn(async move { me.deliver_group(group).await });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Err(e)) => tracing::warn!(error = %e, "recording a security event push failed"),
                Err(e) => tracing::warn!(error = %e, "a security event push task failed"),
                Ok(Ok(())) => {}
            }
        }
        Ok(n)
    }

    /// One receiver's claimed rows: the oldest first; if the receiver
    /// took or refused it, it is up and the rest go at once; if not, the
    /// rest are given back unattempted and the receiver backs off.
    async fn deliver_group(self: &Arc<Self>, group: Vec<Claimed>) -> Result<(), StoreError> {
        let mut rows = group.into_iter();
        let Some(first) = rows.next() else {
            return Ok(());
        };
        let outcome = self.push(&first).await;
        let alive = matches!(outcome, Outcome::Delivered | Outcome::Refused(_));
        self.record(&first, outcome).await?;
        let rest: Vec<Claimed> = rows.collect();
        if !alive {
            let ids: Vec<i64> = rest.iter().map(|c| c.row.id).collect();
            return store::events::release(&self.db, &ids).await;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for c in rest {
            let me = self.clone();
            tasks.spawn(async move {
                let outcome = me.push(&c).await;
                me.record(&c, outcome).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "recording a security event push failed");
            }
        }
        Ok(())
    }

    async fn record(&self, c: &Claimed, outcome: Outcome) -> Result<(), StoreError> {
        let now = self.clock.now();
        let receiver = &c.receiver.id;
        match outcome {
            Outcome::Delivered => store::events::delivered(&self.db, c.row.id, receiver, now).await,
            Outcome::Refused(reason) => {
                tracing::info!(receiver = %receiver, jti = %c.row.jti, reason = %reason, "a receiver refused a SET");
                store::events::refused(&self.db, c.row.id, receiver, &reason, now).await
            }
            Outcome::Retry(error) => {
                let failures = c.receiver.failures.saturating_add(1);
                let retry_at = self.clock.now_ms().saturating_add(backoff_ms(failures));
                tracing::debug!(receiver = %receiver, error = %error, failures, "a SET push failed; retrying later");
                store::events::retry_later(
                    &self.db, c.row.id, receiver, &error, now, retry_at, failures,
                )
                .await
            }
            Outcome::NotNow(why) => {
                tracing::warn!(error = %why, "a SET could not be signed; retrying");
                store::events::release(&self.db, &[c.row.id]).await
            }
        }
    }

    /// Signs the row's SET and pushes it to its receiver (RFC 8935 §2).
    async fn push(&self, c: &Claimed) -> Outcome {
        let set = match self.sign(c).await {
            Ok(set) => set,
            Err(why) => return Outcome::NotNow(why),
        };
        let authorization = match &c.receiver.authorization_sealed {
            None => None,
            Some(sealed) => match self
                .seal_key
                .open(c.receiver.id.as_bytes(), sealed)
                .ok()
                .and_then(|v| String::from_utf8(v).ok())
            {
                Some(value) => Some(value),
                None => {
                    return Outcome::Retry(
                        "the receiver's authorization value cannot be opened with this key-encryption key".into(),
                    );
                }
            },
        };
        match self
            .fetcher
            .post(
                &c.receiver.endpoint_url,
                SET_CONTENT_TYPE,
                "application/json",
                authorization.as_deref(),
                set.into_bytes(),
            )
            .await
        {
            Ok((202, _)) => Outcome::Delivered,
            Ok((400, body)) => match rfc8935_error(&body) {
                Some(reason) => Outcome::Refused(reason),
                None => Outcome::Retry("400 without an RFC 8935 error object".into()),
            },
            Ok((status, _)) => Outcome::Retry(format!("the receiver answered {status}")),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// The SET of an outbox row, signed with the current token key.
    pub async fn sign(&self, c: &Claimed) -> Result<String, String> {
        let issuer = &self.config.issuer;
        let mut events = Map::new();
        events.insert(c.row.event_type.clone(), c.row.event.clone());
        let claims = SetClaims {
            iss: issuer,
            iat: c.row.created_at,
            jti: &c.row.jti,
            aud: &c.receiver.audience,
            txn: &c.row.txn,
            sub_id: with_issuer(c.row.sub_id.clone(), issuer),
            events,
        };
        let keys = self.tokens.keys.current();
        let signer = keys
            .signer(self.clock.now())
            .ok_or_else(|| "no active signing key".to_string())?;
        self.tokens
            .signing
            .sign(signer, SET_TYP, &claims)
            .await
            .map_err(|e| e.to_string())
    }
}

/// RFC 8417 §2.2 claims, as SSF 1.0 §4.1 profiles them: no `sub`, no `exp`.
#[derive(Serialize)]
struct SetClaims<'a> {
    iss: &'a str,
    iat: i64,
    jti: &'a str,
    aud: &'a str,
    txn: &'a str,
    sub_id: Value,
    events: Map<String, Value>,
}

/// Fills `iss` into every `iss_sub` subject identifier (RFC 9493 §3.2.6),
/// also inside a complex subject (SSF 1.0 §3.3).
fn with_issuer(mut sub_id: Value, issuer: &str) -> Value {
    if let Some(obj) = sub_id.as_object_mut() {
        if obj.get("format").and_then(Value::as_str) == Some("iss_sub") {
            obj.insert("iss".into(), Value::from(issuer));
        }
        for (_, member) in obj.iter_mut() {
            if member.is_object() {
                *member = with_issuer(member.take(), issuer);
            }
        }
    }
    sub_id
}

/// RFC 8935 §2.3: `{"err": code, "description": text}`, as one line for
/// the operator (codes and text clipped, control characters dropped).
fn rfc8935_error(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let err = value.get("err")?.as_str()?;
    let clip =
        |s: &str, n: usize| -> String { s.chars().filter(|c| !c.is_control()).take(n).collect() };
    Some(match value.get("description").and_then(Value::as_str) {
        Some(d) => format!("refused: {}: {}", clip(err, 64), clip(d, 256)),
        None => format!("refused: {}", clip(err, 64)),
    })
}

/// The delay before retry `failures` (1, 2, …): 1 s doubling to the cap,
/// of which a random half ("equal jitter"), so that receivers coming back
/// are not hit by every node at once.
pub fn backoff_ms(failures: i32) -> i64 {
    let exponent = u32::try_from(failures.saturating_sub(1).clamp(0, 30)).unwrap_or(0);
    let full = BACKOFF_BASE_MS
        .saturating_mul(1_i64 << exponent)
        .min(BACKOFF_CAP_MS);
    let half = full / 2;
    let random = crate::crypto::random_bytes::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let jitter = i64::try_from(random % u64::try_from(half + 1).unwrap_or(1)).unwrap_or(0);
    half + jitter
}

/// The running worker (and, on PostgreSQL, its listener).
pub struct Worker {
    pub worker: tokio::task::JoinHandle<()>,
    pub listener: Option<tokio::task::JoinHandle<()>>,
}

impl Worker {
    pub fn abort(&self) {
        self.worker.abort();
        if let Some(l) = &self.listener {
            l.abort();
        }
    }
}

/// Starts this node's delivery worker: it pushes what is due, then waits
/// for a wake or [`POLL`]; once a minute it marks SETs older than
/// [`MAX_AGE_SECS`] failed.
pub fn spawn(events: Arc<Events>) -> Worker {
    let listener = spawn_listener(events.clone());
    let worker = tokio::spawn(async move {
        let mut swept: Option<Instant> = None;
        loop {
            let claimed = match events.deliver_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming security events failed");
                    0
                }
            };
            if swept.is_none_or(|t| t.elapsed() >= SWEEP) {
                swept = Some(Instant::now());
                let cutoff = events.clock.now().saturating_sub(MAX_AGE_SECS);
                match store::events::expire(
                    &events.db,
                    cutoff,
                    "not delivered within 3 days (maximum age)",
                )
                .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(expired = n, "security events not delivered in time"),
                    Err(e) => tracing::warn!(error = %e, "expiring security events failed"),
                }
            }
            if claimed as u64 >= BATCH {
                continue;
            }
            tokio::select! {
                _ = events.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    });
    Worker { worker, listener }
}

/// PostgreSQL: every enqueue notifies at commit (`store::events::CHANNEL`),
/// whichever node or CLI wrote it; this wakes the local worker.
fn spawn_listener(events: Arc<Events>) -> Option<tokio::task::JoinHandle<()>> {
    if !store::is_shared(&events.db) {
        return None;
    }
    let pool = events.db.get_postgres_connection_pool().clone();
    Some(tokio::spawn(async move {
        loop {
            match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(store::events::CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN for security events failed");
                    } else {
                        events.wake();
                        while listener.recv().await.is_ok() {
                            events.wake();
                        }
                        tracing::warn!("security event listener lost its connection");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "security event listener cannot connect"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for (failures, full) in [
            (1, 1_000),
            (2, 2_000),
            (4, 8_000),
            (9, 256_000),
            (10, 300_000),
        ] {
            for _ in 0..20 {
                let d = backoff_ms(failures);
                assert!((full / 2..=full).contains(&d), "{failures}: {d}");
            }
        }
        assert!(backoff_ms(i32::MAX) <= BACKOFF_CAP_MS);
        assert!(backoff_ms(0) <= BACKOFF_BASE_MS);
    }

    #[test]
    fn issuer_goes_into_every_iss_sub() {
        let sub = serde_json::json!({
            "format": "complex",
            "user": { "format": "iss_sub", "sub": "u1" },
            "application": { "format": "opaque", "id": "c1" },
        });
        let out = with_issuer(sub, "https://as.example");
        assert_eq!(out["user"]["iss"], "https://as.example");
        assert!(out["application"].get("iss").is_none());
        assert!(out.get("iss").is_none());
    }

    #[test]
    fn rfc8935_errors_are_read_and_clipped() {
        assert_eq!(
            rfc8935_error(br#"{"err":"invalid_audience","description":"not \u0007us"}"#).as_deref(),
            Some("refused: invalid_audience: not us")
        );
        assert_eq!(rfc8935_error(b"<html>"), None);
        assert_eq!(rfc8935_error(br#"{"description":"x"}"#), None);
    }
}
