//! Groups DPoP `jti` spends on PostgreSQL: requests that arrive while an
//! insert is under way, or within [`LINGER`] of the first one waiting, go
//! into the next statement, so a burst of proofs costs a few statements
//! instead of one transaction each. Each statement costs PostgreSQL far
//! more CPU than a row (measured: about 450 µs a statement on the 2-core
//! bench host, so one per proof took a third of a core at 1,200 proofs/s),
//! and the spend runs beside the token's signature (see `crate::proof`), so
//! the added wait is hidden.
//! Exactly-once holds as before: the unique key decides (a second statement
//! inserting the same key waits for the first to commit, then skips it),
//! and within a batch only the first occurrence of a key can win.

use std::sync::Arc;

use crate::store::Db;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::{self, StoreError};

const MAX_BATCH: usize = 256;
/// Batches whose statement may be on the wire at once: the next batch
/// fills while the database answers.
const IN_FLIGHT: usize = 1;
/// How long the first spend of a batch waits for company.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

type Reply = oneshot::Sender<Result<bool, String>>;

#[derive(Clone)]
pub struct ReplayBatcher {
    tx: mpsc::Sender<(String, i64, Reply)>,
}

impl ReplayBatcher {
    pub fn start(db: Db) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(worker(db, rx));
        Self { tx }
    }

    /// `true` when this is the first use of `key`.
    pub async fn use_once(&self, key: String, expires_at: i64) -> Result<bool, StoreError> {
        let unavailable = |why: &str| StoreError::unavailable(format!("replay store: {why}"));
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((key, expires_at, reply))
            .await
            .map_err(|_| unavailable("stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("dropped"))?
            .map_err(|e| unavailable(&e))
    }
}

async fn worker(db: Db, mut rx: mpsc::Receiver<(String, i64, Reply)>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Waiting for a free slot before receiving lets requests gather.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let db = db.clone();
        tokio::spawn(async move {
            let items: Vec<(String, i64)> = batch.iter().map(|(k, e, _)| (k.clone(), *e)).collect();
            let result = store::replay::use_many_fast(&db, &items).await;
            drop(slot);
            for (i, (_, _, reply)) in batch.into_iter().enumerate() {
                let answer = match &result {
                    Ok(won) => Ok(won.get(i).copied().unwrap_or(false)),
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(answer);
            }
        });
    }
}
