//! Audit events off the hot path.
//!
//! Rare, security-relevant changes (registrations, deletions, revocations)
//! write their audit row in the same transaction as the change. Token
//! issuance happens thousands of times a second, so those events go through
//! a bounded channel to one writer that inserts them in batches: a crash
//! can lose at most the last batch interval, never a token or a secret.

use std::time::Duration;

use crate::store::Db;
use tokio::sync::mpsc;

use crate::store::{self, audit::AuditEvent};

const CAPACITY: usize = 65_536;
const BATCH: usize = 512;
const INTERVAL: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
}

impl AuditSink {
    /// Starts the writer task; it drains the channel and exits when every
    /// sender is dropped.
    pub fn start(db: Db) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let handle = tokio::spawn(writer(db, rx));
        (Self { tx }, handle)
    }

    /// Queues an event. When the queue is full the event is dropped and
    /// counted in the log rather than slowing token issuance.
    pub fn record(&self, event: AuditEvent) {
        if self.tx.try_send(event).is_err() {
            tracing::warn!("audit queue full or closed; an issuance event was dropped");
        }
    }
}

async fn writer(db: Db, mut rx: mpsc::Receiver<AuditEvent>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = rx.recv_many(&mut batch, BATCH).await;
        if received == 0 {
            break;
        }
        // Let a burst accumulate into one insert.
        if batch.len() < BATCH {
            tokio::time::sleep(INTERVAL).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
        }
        let events = std::mem::take(&mut batch);
        let count = events.len();
        if let Err(e) = store::audit::insert_many(&db, events).await {
            tracing::error!(error = %e, count, "audit batch could not be written");
        }
    }
}
