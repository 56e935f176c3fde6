//! Groups DPoP `jti` spends on PostgreSQL: requests that arrive while one
//! insert is in flight go into the next one, so a burst of proofs costs a
//! few statements instead of one transaction each. Exactly-once holds as
//! before: the unique key decides, and within a batch only the first
//! occurrence of a key can win.

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use crate::store::{self, StoreError};

const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<bool, String>>;

#[derive(Clone)]
pub struct ReplayBatcher {
    tx: mpsc::Sender<(String, i64, Reply)>,
}

impl ReplayBatcher {
    pub fn start(db: DatabaseConnection) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(worker(db, rx));
        Self { tx }
    }

    /// `true` when this is the first use of `key`.
    pub async fn use_once(&self, key: String, expires_at: i64) -> Result<bool, StoreError> {
        let unavailable =
            |why: &str| StoreError(sea_orm::DbErr::Custom(format!("replay store: {why}")));
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

async fn worker(db: DatabaseConnection, mut rx: mpsc::Receiver<(String, i64, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let items: Vec<(String, i64)> = batch.iter().map(|(k, e, _)| (k.clone(), *e)).collect();
        let result = store::replay::use_many_fast(&db, &items).await;
        for (i, (_, _, reply)) in batch.drain(..).enumerate() {
            let answer = match &result {
                Ok(won) => Ok(won.get(i).copied().unwrap_or(false)),
                Err(e) => Err(e.to_string()),
            };
            let _ = reply.send(answer);
        }
    }
}
