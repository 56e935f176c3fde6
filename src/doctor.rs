//! The connection doctor (issue 30 item 12): what happened to each
//! client's recent attempts to get a token, step by step, with the exact
//! reason of a refusal and what would fix it, for the operator
//! (`/admin/clients/{id}`, `agentauth client trace ID`).
//!
//! Steps are written like issuance audit events: queued on a bounded
//! channel and inserted in batches by one writer, never on the request's
//! path. They land in the database, so every node's steps are readable
//! from any node.
//!
//! Bounds: a client's newest [`KEEP_PER_CLIENT`] steps are kept, nothing
//! older than [`KEEP_FOR`], and [`KEEP_TOTAL`] steps of all clients
//! together (swept hourly and every 20,000 steps written, so the table
//! overshoots by at most that); each node records at most [`PER_CLIENT_PER_MINUTE`]
//! steps per client a minute (a client that fails in a loop shows its
//! first failures, not a flood); the queue holds [`CAPACITY`] steps and
//! drops beyond that. Memory is the queue and the per-client budget:
//! 1.8 MiB for the queue when full (about 460 bytes a step with a long
//! reason and fix), and about 65 bytes per client seen in the last
//! minute: 6.3 MiB at 100,000 clients (`cargo bench --bench doctor`).
//!
//! A step never holds a secret, code or token: reasons name redirect
//! URIs, resources, scopes and grant types, which are all public.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::store::traces::TraceRow;
use crate::store::{self, Db};

/// Steps kept per client.
pub const KEEP_PER_CLIENT: u64 = 50;
/// Steps kept in all, every client together: the oldest go first. At
/// about 480 bytes a row on SQLite, indexes included (`benches/doctor.rs`),
/// some 90 MiB of table.
pub const KEEP_TOTAL: u64 = 200_000;
/// Steps written between two sweeps, at most (besides one an hour).
const SWEEP_EVERY: usize = 20_000;
/// How long a step is kept, in seconds.
pub const KEEP_FOR: i64 = 7 * 86_400;
/// Steps one node records per client and minute.
pub const PER_CLIENT_PER_MINUTE: u32 = 30;
/// Steps queued for the writer, at most.
pub const CAPACITY: usize = 4096;
const BATCH: usize = 256;
const INTERVAL: Duration = Duration::from_millis(200);
/// Longest reason or fix kept, in bytes.
const MAX_TEXT: usize = 1024;

/// The steps of an attempt to get a token.
pub mod step {
    pub const REGISTER: &str = "register";
    pub const DOCUMENT: &str = "document";
    pub const AUTHORIZE: &str = "authorize";
    pub const SIGN_IN: &str = "sign_in";
    pub const CONSENT: &str = "consent";
    pub const CODE_EXCHANGE: &str = "code_exchange";
    pub const REFRESH: &str = "refresh";
    /// A resource refused the client's token and reported it (the kit's
    /// `Reporter`, `POST /doctor/refusals`).
    pub const RESOURCE: &str = "resource";
}

pub struct Doctor {
    tx: mpsc::Sender<TraceRow>,
    per_client: DefaultKeyedRateLimiter<String>,
    clock: SharedClock,
}

/// One step to record.
pub struct Step<'a> {
    pub client_id: &'a str,
    pub attempt: Option<&'a str>,
    pub step: &'static str,
    /// `None`: it went through. `Some(reason)`: refused, and why.
    pub refused: Option<&'a str>,
    /// What would fix it, for the operator.
    pub fix: Option<&'a str>,
    /// For a step that went through: what it established (the methods
    /// and redirect URIs a registration or document declared).
    pub detail: Option<&'a str>,
}

/// At most [`MAX_TEXT`] bytes, without control characters: reasons carry
/// what clients and resources sent (redirect URIs, error descriptions),
/// and a trace is read in a terminal too.
fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut clipped: String = text[..end].chars().filter(|c| !c.is_control()).collect();
    if end < text.len() {
        clipped.push('…');
    }
    clipped
}

impl Doctor {
    /// Starts the writer; it drains the queue and exits when the doctor
    /// is dropped.
    pub fn start(db: Db, clock: SharedClock) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let handle = tokio::spawn(writer(db, clock.clone(), rx));
        let per_minute = NonZeroU32::new(PER_CLIENT_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        (
            Self {
                tx,
                per_client: RateLimiter::keyed(Quota::per_minute(per_minute)),
                clock,
            },
            handle,
        )
    }

    /// Queues a step; dropped when this client's budget for the minute is
    /// spent or the queue is full.
    pub fn record(&self, step: Step<'_>) {
        if step.client_id.is_empty() || step.client_id.len() > 512 {
            return;
        }
        if self
            .per_client
            .check_key(&step.client_id.to_string())
            .is_err()
        {
            return;
        }
        let row = TraceRow {
            client_id: step.client_id.to_string(),
            attempt: step.attempt.map(str::to_string),
            at: self.clock.now(),
            step: step.step,
            refused: step.refused.is_some(),
            reason: step.refused.or(step.detail).map(clip),
            fix: step.fix.map(clip),
        };
        if self.tx.try_send(row).is_err() {
            tracing::debug!("doctor queue full; a step was dropped");
        }
    }

    /// Forgets per-client budgets of clients not seen for a minute.
    pub fn retain_recent(&self) {
        self.per_client.retain_recent();
    }

    /// Clients with a live per-client budget on this node.
    pub fn budgets(&self) -> usize {
        self.per_client.len()
    }
}

/// What a registration or a metadata document declared, in the words of
/// a trace: what the operator compares a later refusal against.
pub fn declared(metadata: &crate::oauth::client_metadata::ClientMetadata) -> String {
    let or_none = |list: &[String]| match list.is_empty() {
        true => "none".to_string(),
        false => list.join(" "),
    };
    format!(
        "authenticates with {}; grants: {}; scope: {}; redirect URIs: {}",
        metadata.token_endpoint_auth_method.as_str(),
        or_none(&metadata.grant_types),
        match metadata.scope.is_empty() {
            true => "(none)",
            false => &metadata.scope,
        },
        or_none(&metadata.redirect_uris),
    )
}

/// A short id for one `/authorize` request: what a person sends their
/// operator from an error page (8 base32 characters, 40 bits).
pub fn attempt_id() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let bytes = crate::crypto::random_bytes::<8>().unwrap_or_default();
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect()
}

async fn writer(db: Db, clock: SharedClock, mut rx: mpsc::Receiver<TraceRow>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_sweep: Option<i64> = None;
    let mut since_sweep = 0usize;
    loop {
        let received = rx.recv_many(&mut batch, BATCH).await;
        if received == 0 {
            break;
        }
        if batch.len() < BATCH {
            tokio::time::sleep(INTERVAL).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        let rows = std::mem::take(&mut batch);
        since_sweep += rows.len();
        let mut clients: Vec<String> = rows.iter().map(|r| r.client_id.clone()).collect();
        clients.sort();
        clients.dedup();
        if let Err(e) = store::traces::insert_many(&db, rows).await {
            tracing::warn!(error = %e, "doctor steps could not be written");
            continue;
        }
        for client in &clients {
            if let Err(e) = store::traces::keep_newest(&db, client, KEEP_PER_CLIENT).await {
                tracing::warn!(error = %e, "doctor steps could not be trimmed");
            }
        }
        let now = clock.now();
        if since_sweep >= SWEEP_EVERY || last_sweep.is_none_or(|at| now.saturating_sub(at) >= 3600)
        {
            last_sweep = Some(now);
            since_sweep = 0;
            if let Err(e) = store::traces::drop_older(&db, now - KEEP_FOR).await {
                tracing::warn!(error = %e, "old doctor steps could not be dropped");
            }
            if let Err(e) = store::traces::keep_total(&db, KEEP_TOTAL).await {
                tracing::warn!(error = %e, "doctor steps beyond the total could not be dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_bounds_reasons_and_drops_control_characters() {
        assert_eq!(super::clip("a\r\nb\u{1b}[2Jc"), "ab[2Jc");
        let long = "é".repeat(super::MAX_TEXT);
        let clipped = super::clip(&long);
        assert!(clipped.len() <= super::MAX_TEXT + '…'.len_utf8());
        assert!(clipped.ends_with('…'));
    }
}
