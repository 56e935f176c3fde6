//! Groups single-use spends on PostgreSQL (DPoP `jti`s, assertion `jti`s,
//! nonces) so that many cost one statement. Each statement costs
//! PostgreSQL far more CPU than a row (measured: about 450 µs a statement
//! on the 2-core bench host), and that CPU is taken from the cores that
//! sign.
//!
//! A spend is queued at once ([`ReplayBatcher::enqueue`]) and its answer
//! is asked for later ([`Ticket::outcome`]). The open batch is sent when
//! somebody asks for an answer from it, when it is full, or [`MAX_LINGER`]
//! after its first spend, whichever comes first. A DPoP proof is queued
//! when it is checked and asked for once the token is signed (see
//! [`crate::proof`]), so under load a batch holds every proof that arrived
//! while the oldest one's token was being signed, and the round trip is
//! hidden behind the signatures of the rest. A caller that asks at once
//! ([`ReplayBatcher::use_once`]) sends the batch at once.
//!
//! Exactly-once holds as with one insert each: the unique key decides (a
//! second statement inserting the same key waits for the first to commit,
//! then skips it), and within a batch only the first occurrence of a key
//! can win.

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;

use crate::store::{self, Db, StoreError};

/// A batch this full goes without waiting to be asked for. (It may grow
/// past this while the previous statement is on the wire.)
const MAX_BATCH: usize = 1024;
/// Spends waiting at most; past this the database is far behind, and a
/// spend fails closed (503) rather than queue without bound.
const MAX_WAITING: usize = 16 * MAX_BATCH;
/// Statements on the wire at once: the next batch fills while the
/// database answers the current one.
const IN_FLIGHT: usize = 1;
/// How long a batch waits for company when nobody asks for its answer
/// (a request that failed after queueing its proof, say).
pub const MAX_LINGER: std::time::Duration = std::time::Duration::from_millis(10);

type Answer = Result<bool, String>;

struct Item {
    key: String,
    expires_at: i64,
    reply: oneshot::Sender<Answer>,
}

/// The batch being filled.
#[derive(Default)]
struct Open {
    /// Which batch this is; a [`Ticket`] remembers it.
    number: u64,
    items: Vec<Item>,
    /// When its first spend came.
    since: Option<Instant>,
    /// Somebody waits for an answer from it.
    wanted: bool,
    /// Every [`ReplayBatcher`] is gone: send what is left, then stop.
    closed: bool,
}

impl Open {
    fn due(&self) -> bool {
        !self.items.is_empty() && (self.wanted || self.closed || self.items.len() >= MAX_BATCH)
    }
}

struct Shared {
    open: Mutex<Open>,
    wake: Notify,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, Open> {
        // Nothing under this lock can panic midway; a poisoned lock holds
        // a consistent batch.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts for `/metrics`: statements sent and spends they carried.
#[derive(Clone, Default)]
pub struct BatchCounters {
    pub statements: Counter,
    pub spends: Counter,
}

#[derive(Clone)]
pub struct ReplayBatcher {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Closes the batcher when the last [`ReplayBatcher`] clone is dropped.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.open().closed = true;
        self.0.wake.notify_one();
    }
}

/// A queued spend; [`Ticket::outcome`] gives its answer.
pub struct Ticket {
    shared: Arc<Shared>,
    batch: u64,
    answer: oneshot::Receiver<Answer>,
}

fn unavailable(why: &str) -> StoreError {
    StoreError::unavailable(format!("replay store: {why}"))
}

impl ReplayBatcher {
    pub fn start(db: Db, counters: BatchCounters) -> Self {
        Self::start_with(db, counters, MAX_LINGER)
    }

    /// [`ReplayBatcher::start`] with another linger (tests).
    pub fn start_with(db: Db, counters: BatchCounters, linger: std::time::Duration) -> Self {
        let shared = Arc::new(Shared {
            open: Mutex::default(),
            wake: Notify::new(),
        });
        tokio::spawn(worker(db, shared.clone(), counters, linger));
        Self {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// Queues the spend of `key`; the statement carrying it goes when
    /// its answer is asked for, or sooner.
    pub fn enqueue(&self, key: String, expires_at: i64) -> Result<Ticket, StoreError> {
        let (reply, answer) = oneshot::channel();
        let mut open = self.shared.open();
        if open.items.len() >= MAX_WAITING {
            return Err(unavailable("too many spends waiting"));
        }
        open.items.push(Item {
            key,
            expires_at,
            reply,
        });
        let first = open.items.len() == 1;
        if first {
            open.since = Some(Instant::now());
        }
        let wake = first || open.items.len() == MAX_BATCH;
        let batch = open.number;
        drop(open);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(Ticket {
            shared: self.shared.clone(),
            batch,
            answer,
        })
    }

    /// `true` when this is the first use of `key`.
    pub async fn use_once(&self, key: String, expires_at: i64) -> Result<bool, StoreError> {
        self.enqueue(key, expires_at)?.outcome().await
    }
}

impl Ticket {
    /// `true` when this was the first use of the key; sends the batch
    /// holding it if it has not gone yet.
    pub async fn outcome(mut self) -> Result<bool, StoreError> {
        use oneshot::error::TryRecvError;
        let answer = match self.answer.try_recv() {
            Ok(answer) => answer,
            Err(TryRecvError::Closed) => return Err(unavailable("dropped")),
            Err(TryRecvError::Empty) => {
                self.ask();
                self.answer.await.map_err(|_| unavailable("dropped"))?
            }
        };
        answer.map_err(|e| unavailable(&e))
    }

    /// Marks this ticket's batch as wanted, if it is still the open one.
    fn ask(&self) {
        let ask = {
            let mut open = self.shared.open();
            let ask = open.number == self.batch && !open.wanted;
            open.wanted |= ask;
            ask
        };
        if ask {
            self.shared.wake.notify_one();
        }
    }
}

async fn worker(db: Db, shared: Arc<Shared>, counters: BatchCounters, linger: std::time::Duration) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Wait until the open batch is due: asked for, full, or lingered.
        loop {
            let woken = shared.wake.notified();
            let deadline = {
                let open = shared.open();
                if open.due() {
                    break;
                }
                if open.closed {
                    return;
                }
                open.since.map(|since| since + linger)
            };
            match deadline {
                Some(at) if Instant::now() >= at => break,
                Some(at) => {
                    tokio::select! {
                        () = woken => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => woken.await,
            }
        }
        // Take the batch only once a slot is free: it keeps filling while
        // the previous statement is on the wire.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let batch = {
            let mut open = shared.open();
            open.number = open.number.wrapping_add(1);
            open.since = None;
            open.wanted = false;
            std::mem::take(&mut open.items)
        };
        counters.statements.inc();
        counters.spends.inc_by(batch.len() as u64);
        let db = db.clone();
        tokio::spawn(async move {
            let keys: Vec<(String, i64)> = batch
                .iter()
                .map(|item| (item.key.clone(), item.expires_at))
                .collect();
            let result = store::replay::use_many_fast(&db, &keys).await;
            drop(slot);
            for (i, item) in batch.into_iter().enumerate() {
                let answer = match &result {
                    Ok(won) => Ok(won.get(i).copied().unwrap_or(false)),
                    Err(e) => Err(e.to_string()),
                };
                let _ = item.reply.send(answer);
            }
        });
    }
}
