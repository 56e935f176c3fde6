//! RSA signing on dedicated threads, in arrival order (ES256 and EdDSA
//! keys sign inline: their signatures cost less than the hand-off).
//!
//! One RSA-2048 signature is about a quarter of a millisecond of CPU. Done
//! inline, it occupies a tokio worker, so that cheap requests (JWKS,
//! metadata, introspection) queue behind token issuance, and the order in
//! which waiting requests get signed follows the scheduler's run queues
//! rather than their arrival. Here the token endpoint builds the signing
//! input on the executor and hands only the private-key operation to a
//! fixed set of threads (one per core) through one FIFO queue.
//!
//! The queue is bounded: when it is full the request fails at once with
//! [`SignError::Busy`] (503 with `Retry-After`) instead of waiting without
//! limit.
//!
//! The hand-off costs context switches: 5 to 10% of peak signing throughput
//! on a 2-core machine. `--signing-threads 0` signs inline instead, for a
//! node that only mints tokens.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::keys::{KeyError, SigningAlg, SigningKey};

/// Jobs waiting beyond this many are refused (about a third of a second of
/// work at this machine class's signing rate).
pub const QUEUE: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the signing queue is full")]
    Busy,
    #[error(transparent)]
    Key(#[from] KeyError),
}

struct Job {
    key: Arc<SigningKey>,
    input: String,
    reply: oneshot::Sender<Result<String, KeyError>>,
}

pub struct SigningPool {
    /// `None`: sign inline, on the caller's thread.
    queue: Option<Queue>,
}

struct Queue {
    tx: crossbeam_channel::Sender<Job>,
    /// Held so that a queue without threads (tests) still queues.
    _rx: crossbeam_channel::Receiver<Job>,
}

impl SigningPool {
    /// Starts `threads` signing threads behind a FIFO queue of [`QUEUE`]
    /// jobs; 0 signs inline. The threads exit when the pool is dropped.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        if threads == 0 {
            return Ok(Self { queue: None });
        }
        Self::with_queue(threads, QUEUE)
    }

    fn with_queue(threads: usize, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue);
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("agentauth-sign-{i}"))
                .spawn(move || {
                    for job in rx {
                        // The requester may have gone away; nothing to do then.
                        let _ = job.reply.send(job.key.finish(job.input));
                    }
                })?;
        }
        Ok(Self {
            queue: Some(Queue { tx, _rx: rx }),
        })
    }

    /// Signs `claims` as a compact JWS with `key`.
    pub async fn sign<T: Serialize>(
        &self,
        key: &Arc<SigningKey>,
        typ: &str,
        claims: &T,
    ) -> Result<String, SignError> {
        let input = key.signing_input(typ, claims)?;
        // ES256 and EdDSA sign in tens of microseconds, less than the
        // hand-off to another thread costs: inline.
        let Some(queue) = self.queue.as_ref().filter(|_| key.alg == SigningAlg::Rs256) else {
            return Ok(key.finish(input)?);
        };
        let (reply, response) = oneshot::channel();
        queue
            .tx
            .try_send(Job {
                key: key.clone(),
                input,
                reply,
            })
            .map_err(|_| SignError::Busy)?;
        response
            .await
            .map_err(|_| KeyError::Sign)?
            .map_err(SignError::Key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signs_in_the_pool_and_refuses_when_the_queue_is_full() {
        let key = Arc::new(SigningKey::generate("k", SigningAlg::Rs256).unwrap().0);
        let claims = serde_json::json!({"sub": "a"});

        // RSASSA-PKCS1-v1_5 is deterministic: the pool signs what inline would.
        let inline = key.sign("at+jwt", &claims).unwrap();
        let pool = SigningPool::new(1).unwrap();
        assert_eq!(pool.sign(&key, "at+jwt", &claims).await.unwrap(), inline);
        let no_threads = SigningPool::new(0).unwrap();
        assert_eq!(
            no_threads.sign(&key, "at+jwt", &claims).await.unwrap(),
            inline
        );

        // No threads: the first job waits in the queue, the second is refused.
        let stalled = Arc::new(SigningPool::with_queue(0, 1).unwrap());
        let (p, k, c) = (stalled.clone(), key.clone(), claims.clone());
        let first = tokio::spawn(async move { p.sign(&k, "at+jwt", &c).await.map(|_| ()) });
        while stalled.queue.as_ref().unwrap().tx.is_empty() && !first.is_finished() {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            stalled.sign(&key, "at+jwt", &claims).await,
            Err(SignError::Busy)
        ));
        first.abort();
    }
}
