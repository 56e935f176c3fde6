//! A DPoP proof presented at one of our endpoints: checked (RFC 9449 §4.3),
//! and its `jti` being spent (§11.1).
//!
//! On PostgreSQL the spend is a database round trip, which would otherwise
//! sit in front of every bound token. The `jti` is queued when the proof is
//! checked, and [`Spend::confirm`] asks for the answer before anything
//! leaves the server or changes: [`crate::grants::issue_access_token`]
//! confirms once the token is signed, which every grant does before its
//! own writes, and the token endpoint confirms again before it answers.
//! Asking only after the signature lets one statement carry every proof
//! queued meanwhile ([`crate::replay::batch`]). A replayed proof thus still
//! gets no token, on any node, and changes no record; it only costs the
//! signature made meanwhile.

use std::sync::Mutex;

use agentauth_resource::dpop::VerifiedProof;
use tokio::sync::OnceCell;

use crate::error::{Error, OAuthError};
use crate::store::StoreError;

/// A checked proof and the spending of its `jti`.
pub struct CheckedProof {
    pub verified: VerifiedProof,
    pub spend: Spend,
}

impl std::ops::Deref for CheckedProof {
    type Target = VerifiedProof;

    fn deref(&self) -> &VerifiedProof {
        &self.verified
    }
}

/// The database's answer, asked for when first awaited (which may send
/// the batch holding it; see [`crate::replay::batch`]).
pub type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, StoreError>> + Send>>;

/// Whether this was the first use of the proof's `jti`: known at once, or
/// still being asked of the database.
pub struct Spend {
    fresh: OnceCell<bool>,
    pending: Mutex<Option<Pending>>,
}

impl Spend {
    pub fn done(fresh: bool) -> Self {
        Self {
            fresh: OnceCell::new_with(Some(fresh)),
            pending: Mutex::new(None),
        }
    }

    pub fn pending(answer: Pending) -> Self {
        Self {
            fresh: OnceCell::new(),
            pending: Mutex::new(Some(answer)),
        }
    }

    /// The outcome, when it is already known.
    pub fn known(&self) -> Option<bool> {
        self.fresh.get().copied()
    }

    /// `Ok` once the `jti` is known to be spent by this request;
    /// `invalid_dpop_proof` for a replay; 503 when the store failed (fail
    /// closed). Safe to call more than once.
    pub async fn confirm(&self) -> Result<(), Error> {
        let fresh = self
            .fresh
            .get_or_try_init(|| async {
                let task = match self.pending.lock() {
                    Ok(mut guard) => guard.take(),
                    Err(poisoned) => poisoned.into_inner().take(),
                };
                let Some(task) = task else {
                    return Err(Error::Unavailable(StoreError::unavailable(
                        "DPoP replay check did not finish",
                    )));
                };
                task.await.map_err(Error::Unavailable)
            })
            .await?;
        if *fresh {
            Ok(())
        } else {
            Err(OAuthError::invalid_dpop_proof("DPoP proof jti was already used").into())
        }
    }
}
