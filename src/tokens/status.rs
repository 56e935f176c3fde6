//! Token Status Lists (draft-ietf-oauth-status-list), the issuer's side:
//! every access token, passport and exchanged token names an index of a
//! list (its `status` claim); a revocation sets the bit; every node serves
//! each list as a signed `statuslist+jwt`, so that a verifier that checks
//! tokens offline learns of a revocation within the list's `ttl`.
//!
//! - **Indices** come from blocks each node reserves from the database
//!   ([`crate::store::status::reserve`]: one statement per [`BLOCK_LEN`]
//!   tokens, never one per token), handed out in a random order within the
//!   block, and only for [`BLOCK_WINDOW`] seconds after the reservation,
//!   so that each list knows when its last token expires and can be
//!   retired.
//! - **Where a token's status is** is recorded ([`StatusLists::record`],
//!   batched: one transaction carries every token issued meanwhile) for
//!   the tokens something else than the token itself can revoke: those of
//!   a user (a refresh family, a code, a consent) and those naming an
//!   agent (a kill). A client's own `client_credentials` token is revoked
//!   only by presenting it, and carries its index in its claim.
//! - **The bits** are the revocation rows that carry an index
//!   (`revoked_tokens.status_list`): every node reads them with its
//!   revocation cache, at most [`REFRESH`] apart, and marks its copy of
//!   each list; a node whose reads have failed for longer than
//!   [`crate::revocation_cache::FRESH_FOR`] seconds answers 503 rather
//!   than serve a list it cannot vouch for.
//! - **A kill** revokes, by index, every token naming the agent issued
//!   before its cut-off, in the kill's transaction and once more after it
//!   commits; a batch of entries being recorded reads the agents it names
//!   from the database after it commits and revokes what a kill between
//!   the two has ended. One of the two always sees the other (each reads
//!   after its own commit), so no token of a killed agent is missed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock};

use agentauth_resource::status::{
    INVALID, STATUS_LIST_TYP, StatusClaim, StatusList, StatusListClaims, StatusListJson,
    StatusListRef,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use crate::clock::SharedClock;
use crate::error::Error;
use crate::keys::KeyRing;
use crate::signing_pool::SigningPool;
use crate::store::revocations::Revoked;
use crate::store::status::{Block, Entry, StatusRef};
use crate::store::{self, Db, StoreError};

/// Indices a node reserves at a time.
pub const BLOCK_LEN: i64 = 1024;
/// Seconds a reserved block is used; then the rest is left unused, so
/// that a list's retirement time is known when the block is reserved.
pub const BLOCK_WINDOW: i64 = 60;
/// Seconds added to a list's retirement for clocks that disagree.
const SKEW: i64 = 60;
/// Seconds a list token is valid (`exp - iat`); a node signs a new one
/// when the bits change or half of this has passed.
pub const LIST_TOKEN_LIFETIME: i64 = 3600;
/// Least time between two reads of the lists caused by requests for a
/// list this node does not know.
pub const UNKNOWN_LIST_READS: std::time::Duration = std::time::Duration::from_millis(100);
/// How often each node reads new revocations and lists.
pub const REFRESH: std::time::Duration = std::time::Duration::from_millis(500);
/// Entries waiting to be recorded at most; past this the database is far
/// behind and issuing fails closed (503).
const MAX_WAITING: usize = 16_384;
/// Entries one transaction records at most.
const MAX_BATCH: usize = 1024;

/// The issuer's status lists, as this node knows them.
pub struct StatusLists {
    issuer: String,
    /// `{issuer}/statuslists/`.
    prefix: String,
    ttl: i64,
    size: i64,
    /// The longest any indexed token lives.
    max_lifetime: i64,
    db: Db,
    clock: SharedClock,
    gate: Option<Arc<Mutex<()>>>,
    block: StdMutex<Option<Reserved>>,
    /// One reservation at a time per node.
    reserving: Mutex<()>,
    lists: RwLock<HashMap<i64, ListState>>,
    /// One signing at a time per node.
    rendering: Mutex<()>,
    /// When a request for an unknown list last made this node read them.
    unknown_read: Mutex<Option<std::time::Instant>>,
    /// When this node last read revocations and lists successfully.
    synced_at: AtomicI64,
    recorder: mpsc::Sender<Job>,
    /// Wakes the refresh task (a revocation on this node).
    pub wake: Arc<Notify>,
}

struct Reserved {
    block: Block,
    /// The block's offsets, in a random order.
    order: Vec<u16>,
    next: usize,
    reserved_at: i64,
}

#[derive(Default)]
struct ListState {
    size: i64,
    set: BTreeSet<u32>,
    version: u64,
    signed: Option<Arc<Rendered>>,
}

/// A list as served: the signed token, its unsigned JSON form, and the
/// entity tags of both.
#[derive(Debug)]
pub struct Rendered {
    pub version: u64,
    pub iat: i64,
    pub jwt: String,
    pub jwt_etag: String,
    pub json: String,
    pub json_etag: String,
}

struct Job {
    entry: Entry,
    reply: oneshot::Sender<Result<(), String>>,
}

/// What [`StatusLists::new`] is built from.
pub struct Settings {
    pub issuer: String,
    pub ttl: i64,
    pub size: i64,
    pub max_lifetime: i64,
}

impl StatusLists {
    /// Starts the recording task (on the current Tokio runtime).
    pub fn new(
        settings: Settings,
        db: Db,
        clock: SharedClock,
        gate: Option<Arc<Mutex<()>>>,
    ) -> Self {
        let (recorder, jobs) = mpsc::channel(MAX_WAITING);
        let wake = Arc::new(Notify::new());
        tokio::spawn(record_batches(
            jobs,
            db.clone(),
            clock.clone(),
            gate.clone(),
            wake.clone(),
        ));
        Self {
            prefix: format!("{}/statuslists/", settings.issuer),
            issuer: settings.issuer,
            ttl: settings.ttl,
            size: settings.size,
            max_lifetime: settings.max_lifetime,
            db,
            clock,
            gate,
            block: StdMutex::new(None),
            reserving: Mutex::new(()),
            lists: RwLock::new(HashMap::new()),
            rendering: Mutex::new(()),
            unknown_read: Mutex::new(None),
            synced_at: AtomicI64::new(0),
            recorder,
            wake,
        }
    }

    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// The URI of list `list`: what tokens reference and where it is served.
    pub fn uri(&self, list: i64) -> String {
        format!("{}{list}", self.prefix)
    }

    /// `status_list_aggregation_endpoint`.
    pub fn aggregation_uri(&self) -> String {
        format!("{}/statuslists", self.issuer)
    }

    /// The list and index a `status` claim of ours names.
    pub fn status_ref(&self, claim: Option<&StatusClaim>) -> Option<StatusRef> {
        let r = &claim?.status_list;
        let list = r.uri.strip_prefix(&self.prefix)?.parse().ok()?;
        Some(StatusRef {
            list,
            idx: i64::try_from(r.idx).ok()?,
        })
    }

    /// The next free index, and the claim that names it.
    pub async fn allocate(&self, now: i64) -> Result<(StatusRef, StatusClaim), Error> {
        loop {
            if let Some(s) = self.take(now) {
                let claim = StatusClaim {
                    status_list: StatusListRef {
                        idx: u64::try_from(s.idx).unwrap_or_default(),
                        uri: self.uri(s.list),
                    },
                };
                return Ok((s, claim));
            }
            let _one = self.reserving.lock().await;
            // Another caller may have reserved while this one waited.
            if self
                .block
                .lock()
                .is_ok_and(|slot| slot.as_ref().is_some_and(|r| Self::usable(r, now)))
            {
                continue;
            }
            let retire_after = now + BLOCK_WINDOW + self.max_lifetime + SKEW;
            let block = {
                let _gate = match &self.gate {
                    Some(g) => Some(g.lock().await),
                    None => None,
                };
                store::status::reserve(&self.db, self.size, BLOCK_LEN, now, retire_after).await?
            };
            // A node serves the lists it issues from at once: the
            // aggregation names a token's list as soon as the token exists.
            if let Ok(mut lists) = self.lists.write() {
                lists.entry(block.list).or_insert_with(|| ListState {
                    size: block.size,
                    ..Default::default()
                });
            }
            let order = shuffled(block.len)?;
            if let Ok(mut slot) = self.block.lock() {
                *slot = Some(Reserved {
                    block,
                    order,
                    next: 0,
                    reserved_at: now,
                });
            }
        }
    }

    fn usable(r: &Reserved, now: i64) -> bool {
        r.next < r.order.len() && now >= r.reserved_at && now < r.reserved_at + BLOCK_WINDOW
    }

    fn take(&self, now: i64) -> Option<StatusRef> {
        let mut slot = self.block.lock().ok()?;
        let r = slot.as_mut().filter(|r| Self::usable(r, now))?;
        let offset = i64::from(*r.order.get(r.next)?);
        r.next += 1;
        Some(StatusRef {
            list: r.block.list,
            idx: r.block.start + offset,
        })
    }

    /// Records where a token's status is, and which agents it names;
    /// returns once the entry is committed (so that a kill finds it) and
    /// checked against those agents as the database has them now.
    pub async fn record(&self, entry: Entry) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.recorder
            .try_send(Job { entry, reply })
            .map_err(|_| StoreError::unavailable("status entries are queued beyond their bound"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("the status recorder stopped"))?
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    /// Marks the bits of `rows` (revocations read by the refresh task).
    pub fn apply(&self, rows: &[Revoked]) {
        let Ok(mut lists) = self.lists.write() else {
            return;
        };
        for r in rows {
            let Some(s) = r.status else { continue };
            let (Some(list), Ok(idx)) = (lists.get_mut(&s.list), u32::try_from(s.idx)) else {
                continue;
            };
            if s.idx < list.size && list.set.insert(idx) {
                list.version += 1;
            }
        }
    }

    /// Reads the live lists: new ones are added, retired ones dropped.
    /// Called by the refresh task; the bits of a new list come with the
    /// revocation rows the cache reads (a minute back each time, and
    /// every unexpired row the first time).
    pub async fn sync_lists(&self, now: i64) -> Result<(), StoreError> {
        let live = store::status::live_lists(&self.db, now).await?;
        if let Ok(mut lists) = self.lists.write() {
            lists.retain(|id, _| live.iter().any(|l| l.id == *id));
            for l in &live {
                lists.entry(l.id).or_insert_with(|| ListState {
                    size: l.size,
                    ..Default::default()
                });
            }
        }
        Ok(())
    }

    /// Whether this node serves list `id`; for an id newer than every
    /// list it knows (another node may have just opened it), it reads the
    /// lists first, at most once per [`UNKNOWN_LIST_READS`] whatever
    /// anyone asks (the endpoint is public).
    pub async fn knows(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let (known, newest) = match self.lists.read() {
            Ok(l) => (l.contains_key(&id), l.keys().max().copied().unwrap_or(0)),
            Err(_) => (false, 0),
        };
        if known || id <= newest {
            return Ok(known);
        }
        {
            let mut last = self.unknown_read.lock().await;
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_LIST_READS) {
                return Ok(false);
            }
            *last = Some(std::time::Instant::now());
        }
        self.sync_lists(now).await?;
        Ok(self.lists.read().is_ok_and(|l| l.contains_key(&id)))
    }

    /// Marks this node's copy as read from the database at `now`.
    pub fn synced(&self, now: i64) {
        self.synced_at.store(now, Ordering::Release);
    }

    /// Whether this node's copy is recent enough to serve.
    pub fn is_fresh(&self, now: i64) -> bool {
        now - self.synced_at.load(Ordering::Acquire) <= crate::revocation_cache::FRESH_FOR
    }

    /// The ids of the lists this node serves.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .lists
            .read()
            .map(|l| l.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// List `id`, signed: the one signed before while its bits are
    /// unchanged and it is less than half its lifetime old, else a new
    /// one. `None`: no such list (or retired).
    pub async fn render(
        &self,
        id: i64,
        keys: &KeyRing,
        signing: &SigningPool,
    ) -> Result<Option<Arc<Rendered>>, Error> {
        let now = self.clock.now();
        if !self.is_fresh(now) {
            return Err(
                StoreError::unavailable("this node has not read the revocations recently").into(),
            );
        }
        if let Some(r) = self.reusable(id, now) {
            return Ok(Some(r));
        }
        let _one = self.rendering.lock().await;
        if let Some(r) = self.reusable(id, now) {
            return Ok(Some(r));
        }
        let Some((size, set, version)) = self.snapshot(id) else {
            return Ok(None);
        };
        let bytes = usize::try_from(size).unwrap_or(0);
        let mut list =
            StatusList::new(1, bytes).map_err(|e| Error::Internal(format!("status list: {e}")))?;
        for idx in set {
            list.set(idx as usize, INVALID)
                .map_err(|e| Error::Internal(format!("status list: {e}")))?;
        }
        let status_list: StatusListJson = list.to_json();
        let json = serde_json::to_string(&status_list)
            .map_err(|e| Error::Internal(format!("status list: {e}")))?;
        let claims = StatusListClaims {
            sub: self.uri(id),
            iat: now,
            exp: Some(now + LIST_TOKEN_LIFETIME),
            ttl: Some(self.ttl),
            iss: Some(self.issuer.clone()),
            status_list,
        };
        let key_set = keys.current();
        let signer = key_set
            .signer(now)
            .ok_or_else(|| Error::Internal("no active signing key".into()))?;
        let jwt = signing.sign(signer, STATUS_LIST_TYP, &claims).await?;
        let rendered = Arc::new(Rendered {
            version,
            iat: now,
            jwt_etag: etag(jwt.as_bytes()),
            json_etag: etag(json.as_bytes()),
            jwt,
            json,
        });
        if let Ok(mut lists) = self.lists.write()
            && let Some(state) = lists.get_mut(&id)
            && state.version == version
        {
            state.signed = Some(rendered.clone());
        }
        Ok(Some(rendered))
    }

    fn reusable(&self, id: i64, now: i64) -> Option<Arc<Rendered>> {
        let lists = self.lists.read().ok()?;
        let state = lists.get(&id)?;
        state
            .signed
            .as_ref()
            .filter(|r| r.version == state.version && now - r.iat < LIST_TOKEN_LIFETIME / 2)
            .cloned()
    }

    fn snapshot(&self, id: i64) -> Option<(i64, Vec<u32>, u64)> {
        let lists = self.lists.read().ok()?;
        let state = lists.get(&id)?;
        Some((
            state.size,
            state.set.iter().copied().collect(),
            state.version,
        ))
    }
}

/// A strong entity tag of `body`.
fn etag(body: &[u8]) -> String {
    let digest = crate::crypto::sha256(body);
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// `0..len` in a random order (Fisher-Yates): indices within a block say
/// nothing about the order tokens were issued in.
fn shuffled(len: i64) -> Result<Vec<u16>, Error> {
    let len = u16::try_from(len.clamp(0, i64::from(u16::MAX)))
        .map_err(|_| Error::Internal("status block too long".into()))?;
    let mut order: Vec<u16> = (0..len).collect();
    let random = crate::crypto::random_bytes::<{ 4 * BLOCK_LEN as usize }>()
        .map_err(|e| Error::Internal(e.to_string()))?;
    for i in (1..order.len()).rev() {
        let at = 4 * (i % BLOCK_LEN as usize);
        let r = u32::from_le_bytes([random[at], random[at + 1], random[at + 2], random[at + 3]]);
        order.swap(i, r as usize % (i + 1));
    }
    Ok(order)
}

/// The recording task: every entry queued while the previous transaction
/// ran goes in the next one.
async fn record_batches(
    mut jobs: mpsc::Receiver<Job>,
    db: Db,
    clock: SharedClock,
    gate: Option<Arc<Mutex<()>>>,
    wake: Arc<Notify>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let entries: Vec<Entry> = batch.iter().map(|j| j.entry.clone()).collect();
        let outcome = record_checked(&db, clock.now(), gate.as_deref(), &entries, &wake)
            .await
            .map_err(|e| e.to_string());
        for job in batch {
            let _ = job.reply.send(outcome.clone());
        }
    }
}

async fn record_checked(
    db: &Db,
    now: i64,
    gate: Option<&Mutex<()>>,
    entries: &[Entry],
    wake: &Notify,
) -> Result<(), StoreError> {
    {
        let _gate = match gate {
            Some(g) => Some(g.lock().await),
            None => None,
        };
        store::status::record(db, entries).await?;
    }
    // After the commit: a kill that committed before this read is seen
    // here; one that commits after it sees these entries.
    let mut ids: Vec<String> = entries.iter().flat_map(|e| e.agents.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let agents = store::status::agents_now(db, &ids).await?;
    let honours = |id: &str, iat: i64| {
        agents
            .iter()
            .any(|(a, active, after)| a == id && *active && iat >= *after)
    };
    let dead: Vec<_> = entries
        .iter()
        .filter(|e| e.agents.iter().any(|a| !honours(a, e.iat)))
        .map(|e| {
            (
                e.jti.clone(),
                e.agents.first().cloned().unwrap_or_default(),
                e.exp,
                e.status,
            )
        })
        .collect();
    if !dead.is_empty() {
        let _gate = match gate {
            Some(g) => Some(g.lock().await),
            None => None,
        };
        store::status::revoke_rows(db, dead, now).await?;
        wake.notify_one();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_a_permutation() {
        let order = shuffled(BLOCK_LEN).unwrap();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1024).collect::<Vec<u16>>());
        assert_ne!(
            order, sorted,
            "1024! orders; the identity is not one we expect"
        );
    }
}
