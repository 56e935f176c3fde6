//! Token status at a resource that verifies tokens offline (feature
//! `remote`): [`StatusListCache`] fetches, verifies and caches the
//! issuer's status lists (draft-ietf-oauth-status-list §8), so that a
//! token revoked at the authorization server (revocation, a revoked
//! refresh family, an agent's kill switch, a deleted user) is refused here
//! within the list's `ttl` plus one fetch, instead of at its `exp`.
//!
//! A token that carries a `status` claim (`{"status_list": {"idx": 7,
//! "uri": "https://as.example/statuslists/3"}}`) is looked up in the list
//! at `uri`: status 0 (valid) passes; 1 (invalid), 2 (suspended) or any
//! other value is 401 `invalid_token`, like every other token failure, and
//! an index outside the list too.
//!
//! # Fetching
//!
//! - Only lists at the issuer's origin (scheme, host and port of the
//!   configured issuer) are fetched; any other `uri` is refused (401)
//!   without a request, so that a token cannot make the resource fetch an
//!   arbitrary URL.
//! - `GET uri` with `Accept: application/statuslist+jwt`, and
//!   `If-None-Match` with the held list's `ETag`: a 304 renews the held
//!   list for another `ttl`.
//! - The list token must have `typ` `statuslist+jwt` (exactly), be signed
//!   by one of the issuer's token keys with that key's pinned `alg` (the
//!   same [`KeySource`] that verifies access tokens: with [`RemoteKeys`],
//!   an unknown `kid` refetches the JWKS, within its refetch limit), have
//!   `sub` equal to `uri` byte for byte, `iss` (when present) equal to the
//!   issuer, and an `exp` that has not passed; its list is inflated at
//!   most to [`StatusListPolicy::max_list_len`] statuses.
//! - A list is used for its `ttl`, clamped to
//!   [`StatusListPolicy::min_ttl`]..=[`StatusListPolicy::max_ttl`], and
//!   never past the list token's `exp`. A request that finds a list past
//!   3/4 of its `ttl` starts one refresh in the background; a request that
//!   finds it past its `ttl` (or finds none) waits for a fetch. However many
//!   requests arrive, one fetch per list is under way at a time, and the
//!   requests waiting for a list share it.
//!
//! # When a list cannot be fetched
//!
//! A network error, a timeout, an answer other than 200/304, or a list
//! token that fails a check above is a failed fetch. Then:
//!
//! - with a list fetched before, the last good list keeps being used for
//!   [`StatusListPolicy::grace`] past its `ttl` (never past its token's
//!   `exp`), while the kit retries in the background at most once per
//!   [`StatusListPolicy::retry_interval`]; requests do not wait for those
//!   retries;
//! - past the grace, or for a list never fetched, a request is refused
//!   with 503 and `Retry-After` ([`ResourceError::StatusListUnavailable`]):
//!   the token may be valid, but nothing says it still is. A request
//!   waits for a fetch again once the retry interval has passed.
//!
//! So a revocation reaches this resource within `ttl` plus one fetch while
//! the issuer answers, and within `ttl` plus the grace when it does not.
//!
//! # Cost
//!
//! A request on a fresh list ([`StatusListCache::check_cached`]) waits
//! for nothing, allocates nothing and takes no lock: each thread remembers
//! the list it read last, valid until the cache's lists change (one atomic
//! load). About 14 ns, under 2 % of a verification
//! (`bench/results/kit-status.md`).
//! [`StatusListCache::last_error`] says why a list's last fetch failed.
//!
//! # Tokens without `status`
//!
//! Accepted by default: tokens of authorization servers from before
//! status lists carry none, and an offline verifier then relies on their
//! `exp` as before. [`StatusListPolicy::require_status`] refuses them.
//!
//! ```no_run
//! # async fn run() -> Result<(), agentauth_resource::remote::RemoteError> {
//! use std::sync::Arc;
//! use std::time::SystemTime;
//! use agentauth_resource::status_cache::{StatusListCache, StatusListPolicy};
//! use agentauth_resource::{ResourceVerifier, remote::RemoteKeys};
//!
//! let keys = Arc::new(RemoteKeys::discover("https://auth.example.com").await?);
//! let lists = StatusListCache::remote(keys.clone(), StatusListPolicy::default())?;
//! let verifier = ResourceVerifier::new("https://auth.example.com", "https://mcp.example.com/mcp", keys);
//! # let headers = http::HeaderMap::new();
//! let now = SystemTime::now();
//! let unix = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
//! let checked = match verifier.verify_request("POST", "https://mcp.example.com/mcp", &headers, unix) {
//!     Ok(v) => lists.check(v.claims.status.as_ref(), now).await.map(|()| v),
//!     Err(e) => Err(e),
//! };
//! // Err(e): answer e.headers() (401 with its challenge, or 503 with Retry-After).
//! # let _ = checked;
//! # Ok(()) }
//! ```
//!
//! With the `axum` feature, [`crate::guard::Guard::check_status`] does all
//! of this for every request.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, StatusCode, header};

use crate::jwt::{KeySource, VerifyError, verify_jwt};
use crate::remote::{RemoteError, RemoteKeys, http_client};
use crate::status::{
    INVALID, STATUS_LIST_JWT_MEDIA_TYPE, STATUS_LIST_TYP, SUSPENDED, StatusClaim, StatusError,
    StatusList, StatusListClaims, StatusListRef, VALID,
};
use crate::verifier::ResourceError;

/// How status lists are fetched, kept, and given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusListPolicy {
    /// The shortest time a list is kept, whatever its `ttl` says
    /// (default 1 s): a list with `ttl` 0 would make every request a fetch.
    pub min_ttl: Duration,
    /// The longest time a list is kept before it is fetched again,
    /// whatever its `ttl` says (default 300 s); also the time a list
    /// without `ttl` is kept. The bound on how late a revocation reaches
    /// this resource while the issuer answers.
    pub max_ttl: Duration,
    /// How long past its `ttl` the last good list is still used while it
    /// cannot be fetched again (default 60 s); never past the list token's
    /// `exp`. Zero: refuse (503) as soon as a stale list cannot be renewed.
    pub grace: Duration,
    /// The least time between two fetches of a list after one failed
    /// (default 1 s); the `Retry-After` of a 503.
    pub retry_interval: Duration,
    /// How long one fetch may take (default 2 s). Requests that wait for a
    /// list wait at most this long (plus the JWKS refetch of an unknown
    /// `kid`).
    pub fetch_timeout: Duration,
    /// The most statuses a list may hold (default 2^24, 2 MiB at one bit
    /// each): a list inflating beyond it is refused (a few kilobytes of
    /// DEFLATE can inflate to gigabytes).
    pub max_list_len: usize,
    /// The most lists held at once (default 1024; a list being fetched
    /// when it is dropped comes back): past it the list fetched longest
    /// ago is dropped.
    pub max_lists: usize,
    /// Refuse tokens that carry no `status` claim (default: accept them,
    /// as tokens of authorization servers from before status lists).
    pub require_status: bool,
}

impl Default for StatusListPolicy {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            grace: Duration::from_secs(60),
            retry_interval: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(2),
            max_list_len: 1 << 24,
            max_lists: 1024,
            require_status: false,
        }
    }
}

/// Why a status list could not be fetched or used (the 503's cause, for
/// logs: [`StatusListCache::last_error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusListError {
    #[error("the list could not be fetched: {0}")]
    Fetch(String),
    #[error("the list endpoint answered {0}")]
    Status(u16),
    #[error("the answer is not application/statuslist+jwt")]
    MediaType,
    #[error("the answer is larger than a list of the allowed size")]
    TooLarge,
    #[error("the list token is not a JWS")]
    Malformed,
    #[error("the list token's typ is not statuslist+jwt")]
    Typ,
    #[error("the list token is not signed by a key of the issuer")]
    UnknownKey,
    #[error("the list token's signature or claims are not valid")]
    Signature,
    #[error("the list token's sub is not the list's uri")]
    Sub,
    #[error("the list token's iss is not the issuer")]
    Iss,
    #[error("the list token has expired")]
    Expired,
    #[error("the list token's list: {0}")]
    List(StatusError),
}

/// Refusals of a token for its status (401 `invalid_token`).
const REVOKED: ResourceError = ResourceError::InvalidToken("the token has been revoked");
const SUSPENDED_TOKEN: ResourceError = ResourceError::InvalidToken("the token is suspended");
const NOT_VALID: ResourceError = ResourceError::InvalidToken("the token's status is not valid");
const OUTSIDE: ResourceError =
    ResourceError::InvalidToken("the token's status index is outside its status list");
const FOREIGN: ResourceError =
    ResourceError::InvalidToken("the token's status list is not at its issuer");
const NO_STATUS: ResourceError =
    ResourceError::InvalidToken("the token carries no status, which this resource requires");

/// The issuer's status lists, by `uri`: verified, cached, refreshed. Cheap
/// to clone (one shared cache); share one per issuer.
#[derive(Clone)]
pub struct StatusListCache {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    origin: url::Origin,
    keys: Arc<dyn KeySource>,
    /// Refetches the JWKS on an unknown `kid` (the same keys as `keys`).
    remote: Option<Arc<RemoteKeys>>,
    http: reqwest::Client,
    policy: StatusListPolicy,
    lists: RwLock<Lists>,
    /// Bumped whenever a held list changes or a list is dropped: a
    /// thread's [`Memo`] of an older generation is not used.
    generation: AtomicU64,
}

type Lists = HashMap<Arc<str>, Entry, BuildHasherDefault<UriHasher>>;

/// The list a thread read last, so that the next request for it reads no
/// lock and hashes nothing (one atomic load and a comparison of the
/// `uri`): a resource's tokens point into few lists, most often the
/// newest. Only a memo: valid while the cache's generation is the one it
/// was made at; it keeps the cache's allocation (not the cache) alive, so
/// `cache` cannot name another cache at the same address.
struct Memo {
    cache: std::sync::Weak<Inner>,
    generation: u64,
    uri: Arc<str>,
    held: Arc<Held>,
    slot: Arc<Slot>,
}

thread_local! {
    static LAST_READ: std::cell::RefCell<Option<Memo>> = const { std::cell::RefCell::new(None) };
}

/// One list: the last good one (what requests read, under the map's read
/// lock only) and the fetching state.
struct Entry {
    held: Option<Arc<Held>>,
    slot: Arc<Slot>,
}

/// A verified list and its times (Unix milliseconds).
struct Held {
    list: Arc<StatusList>,
    etag: Option<HeaderValue>,
    fetched_at: i64,
    ttl: i64,
    exp: Option<i64>,
    /// From here on a request starts a refresh in the background.
    refresh_from: i64,
    /// From here on a request waits for a fetch.
    fresh_until: i64,
    /// From here on the list is not used at all.
    usable_until: i64,
}

impl Held {
    fn new(
        list: Arc<StatusList>,
        etag: Option<HeaderValue>,
        now: i64,
        ttl: i64,
        exp: Option<i64>,
        grace: i64,
    ) -> Self {
        let exp_or_max = exp.unwrap_or(i64::MAX);
        let fresh_until = now.saturating_add(ttl).min(exp_or_max);
        Self {
            list,
            etag,
            fetched_at: now,
            ttl,
            exp,
            refresh_from: now.saturating_add(ttl / 4 * 3).min(fresh_until),
            fresh_until,
            usable_until: fresh_until.saturating_add(grace).min(exp_or_max),
        }
    }

    /// The same list, confirmed unchanged (304) at `now`.
    fn renewed(&self, now: i64, grace: i64) -> Self {
        Self::new(
            self.list.clone(),
            self.etag.clone(),
            now,
            self.ttl,
            self.exp,
            grace,
        )
    }

    #[inline]
    fn status(&self, idx: u64) -> Option<u8> {
        self.list.get(usize::try_from(idx).ok()?)
    }
}

/// Fetching state of one list.
struct Slot {
    /// Held while fetching: one fetch at a time, and requests that wait
    /// for the list wait here for the same fetch.
    fetch: tokio::sync::Mutex<()>,
    /// A background refresh is spawned.
    refreshing: AtomicBool,
    /// After a failed fetch, when the next may be made; [`SUCCEEDED`]
    /// after a successful one.
    retry_at: AtomicI64,
    failure: Mutex<Option<StatusListError>>,
}

const SUCCEEDED: i64 = i64::MIN;

impl Slot {
    fn new() -> Self {
        Self {
            fetch: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
            retry_at: AtomicI64::new(SUCCEEDED),
            failure: Mutex::new(None),
        }
    }
}

/// The status at `idx` in `held` if it is fresh at `now`, and the slot to
/// refresh in the background when it is time (and none is under way).
#[inline]
fn look(held: &Held, slot: &Arc<Slot>, idx: u64, now: i64) -> (Cached, Option<Arc<Slot>>) {
    if now >= held.fresh_until {
        return (Cached::Miss, None);
    }
    let found = match held.status(idx) {
        Some(s) => Cached::Status(s),
        None => Cached::Outside,
    };
    let refresh = (now >= held.refresh_from
        && now >= slot.retry_at.load(Ordering::Relaxed)
        && !slot.refreshing.load(Ordering::Relaxed))
    .then(|| slot.clone());
    (found, refresh)
}

/// The answer for a token whose status is `found` (`None`: its index is
/// outside the list).
#[inline]
fn verdict(found: Option<u8>) -> Result<(), ResourceError> {
    match found {
        Some(VALID) => Ok(()),
        Some(INVALID) => Err(REVOKED),
        Some(SUSPENDED) => Err(SUSPENDED_TOKEN),
        Some(_) => Err(NOT_VALID),
        None => Err(OUTSIDE),
    }
}

/// What the warm path found.
enum Cached {
    Status(u8),
    Outside,
    /// No list fresh enough: the slow path decides.
    Miss,
}

impl StatusListCache {
    /// Status lists of `issuer`, verified with `keys` (the key source that
    /// verifies its access tokens).
    pub fn new(
        issuer: impl Into<String>,
        keys: Arc<dyn KeySource>,
        policy: StatusListPolicy,
    ) -> Result<Self, RemoteError> {
        Self::build(issuer.into(), keys, None, policy)
    }

    /// Status lists of the issuer of `keys`, verified with its keys (a
    /// list token under an unknown `kid` refetches them, as an access
    /// token does).
    pub fn remote(keys: Arc<RemoteKeys>, policy: StatusListPolicy) -> Result<Self, RemoteError> {
        Self::build(keys.issuer().to_string(), keys.clone(), Some(keys), policy)
    }

    /// `keys` must be, or read, `remote`, whose keys are refetched on an
    /// unknown `kid`.
    pub(crate) fn build(
        issuer: String,
        keys: Arc<dyn KeySource>,
        remote: Option<Arc<RemoteKeys>>,
        policy: StatusListPolicy,
    ) -> Result<Self, RemoteError> {
        let origin = url::Url::parse(&issuer)
            .map(|u| u.origin())
            .map_err(|e| RemoteError::Shape(issuer.clone(), e.to_string()))?;
        if !origin.is_tuple() {
            return Err(RemoteError::Shape(
                issuer,
                "the issuer is not an http(s) URL".into(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                http: http_client(&issuer)?,
                issuer,
                origin,
                keys,
                remote,
                policy,
                lists: RwLock::default(),
                generation: AtomicU64::new(0),
            }),
        })
    }

    pub fn policy(&self) -> &StatusListPolicy {
        &self.inner.policy
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// draft-ietf-oauth-status-list §8.3: the status of a token whose
    /// `status` claim is `status` (`None`: it has none), at `now`. `Ok`
    /// for a valid token; 401 `invalid_token` for any other status, an
    /// index outside the list, a list not at the issuer, or a missing claim
    /// where [`StatusListPolicy::require_status`]; 503
    /// ([`ResourceError::StatusListUnavailable`]) when no usable list can
    /// be had. With a fresh list at hand it answers at once
    /// ([`Self::check_cached`]).
    pub async fn check(
        &self,
        status: Option<&StatusClaim>,
        now: SystemTime,
    ) -> Result<(), ResourceError> {
        if let Some(verdict) = self.check_cached(status, now) {
            return verdict;
        }
        let Some(status) = status else {
            return Ok(());
        };
        let reference = &status.status_list;
        // Boxed: the fetch's future is kilobytes, which every `check` (and
        // the guard's future around it) would otherwise carry.
        let found = Box::pin(self.inner.slow(reference, millis(now))).await?;
        verdict(found)
    }

    /// [`Self::check`] when it needs no fetch (the warm path: no wait, no
    /// allocation, no lock, one atomic load); `None` when the list must
    /// be fetched or its failure policy applied, which [`Self::check`]
    /// does.
    #[inline]
    pub fn check_cached(
        &self,
        status: Option<&StatusClaim>,
        now: SystemTime,
    ) -> Option<Result<(), ResourceError>> {
        let Some(status) = status else {
            return Some(if self.inner.policy.require_status {
                Err(NO_STATUS)
            } else {
                Ok(())
            });
        };
        match self.inner.cached(&status.status_list, millis(now)) {
            Cached::Status(s) => Some(verdict(Some(s))),
            Cached::Outside => Some(verdict(None)),
            Cached::Miss => None,
        }
    }

    /// Why the last fetch of the list at `uri` failed, while it has not
    /// succeeded since.
    pub fn last_error(&self, uri: &str) -> Option<StatusListError> {
        let slot = self.inner.read().get(uri)?.slot.clone();
        slot.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Unix milliseconds (0 before 1970).
#[inline]
fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Lists> {
        self.lists.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn held(&self, uri: &str) -> Option<Arc<Held>> {
        self.read().get(uri)?.held.clone()
    }

    /// The warm path: the status from a fresh list, from this thread's
    /// memo of the list it read last or else under the map's read lock;
    /// past 3/4 of the list's `ttl`, one refresh is spawned.
    #[inline]
    fn cached(self: &Arc<Self>, reference: &StatusListRef, now: i64) -> Cached {
        let generation = self.generation.load(Ordering::Acquire);
        let memo = LAST_READ
            .try_with(|memo| {
                let memo = memo.try_borrow().ok()?;
                let m = memo.as_ref()?;
                (m.generation == generation
                    && std::ptr::eq(m.cache.as_ptr(), Arc::as_ptr(self))
                    && *m.uri == *reference.uri)
                    .then(|| look(&m.held, &m.slot, reference.idx, now))
            })
            .ok()
            .flatten();
        let (found, refresh) = match memo {
            Some(found) => found,
            None => {
                let (found, memo) = {
                    let lists = self.read();
                    let Some((uri, entry)) = lists.get_key_value(reference.uri.as_str()) else {
                        return Cached::Miss;
                    };
                    let Some(held) = &entry.held else {
                        return Cached::Miss;
                    };
                    let found = look(held, &entry.slot, reference.idx, now);
                    let memo = Memo {
                        cache: Arc::downgrade(self),
                        generation,
                        uri: uri.clone(),
                        held: held.clone(),
                        slot: entry.slot.clone(),
                    };
                    (found, memo)
                };
                if !matches!(found.0, Cached::Miss) {
                    let _ = LAST_READ.try_with(|last| {
                        if let Ok(mut last) = last.try_borrow_mut() {
                            *last = Some(memo);
                        }
                    });
                }
                found
            }
        };
        if let Some(slot) = refresh {
            self.refresh_in_background(&reference.uri, slot, now);
        }
        found
    }

    /// Spawns one refresh of the list (none when one is under way, or
    /// outside a Tokio runtime: requests then fetch it when it is stale).
    fn refresh_in_background(self: &Arc<Self>, uri: &str, slot: Arc<Slot>, now: i64) {
        if slot.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            slot.refreshing.store(false, Ordering::Release);
            return;
        };
        let (inner, uri) = (self.clone(), uri.to_string());
        runtime.spawn(async move {
            inner.attempt(&uri, &slot, now, true).await;
            slot.refreshing.store(false, Ordering::Release);
        });
    }

    /// No fresh list at hand: use the last good one within its grace
    /// while fetches fail, else wait for a fetch (one for all waiting
    /// requests), else 503. `Ok(None)`: the index is outside the list.
    async fn slow(
        self: &Arc<Self>,
        reference: &StatusListRef,
        now: i64,
    ) -> Result<Option<u8>, ResourceError> {
        let uri = reference.uri.as_str();
        let slot = self.slot(uri, now)?;
        let mut fetched = false;
        loop {
            let held = self.held(uri);
            if let Some(held) = &held
                && now < held.fresh_until
            {
                return Ok(held.status(reference.idx));
            }
            let retry_at = slot.retry_at.load(Ordering::Acquire);
            let failing = retry_at != SUCCEEDED;
            if failing
                && let Some(held) = &held
                && now < held.usable_until
            {
                // Grace: requests do not wait for retries.
                if now >= retry_at {
                    self.refresh_in_background(uri, slot.clone(), now);
                }
                return Ok(held.status(reference.idx));
            }
            if fetched || (failing && now < retry_at) {
                let wait = retry_at.saturating_sub(now).max(0).unsigned_abs();
                let retry_after = u32::try_from(wait.div_ceil(1000)).unwrap_or(u32::MAX);
                return Err(ResourceError::StatusListUnavailable {
                    retry_after: retry_after.max(1),
                });
            }
            self.attempt(uri, &slot, now, false).await;
            fetched = true;
        }
    }

    /// The list's fetching state, made on first sight of a `uri` at the
    /// issuer's origin (any other is refused before any request).
    fn slot(&self, uri: &str, now: i64) -> Result<Arc<Slot>, ResourceError> {
        if let Some(entry) = self.read().get(uri) {
            return Ok(entry.slot.clone());
        }
        let at_issuer = url::Url::parse(uri).is_ok_and(|u| {
            u.origin() == self.origin && u.username().is_empty() && u.password().is_none()
        });
        if !at_issuer {
            return Err(FOREIGN);
        }
        let mut lists = self.lists.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = lists.get(uri) {
            return Ok(entry.slot.clone());
        }
        if lists.len() >= self.policy.max_lists.max(1) {
            // Drop the list fetched longest ago (a dead one first). Requests
            // waiting for its fetch still get it, and put it back.
            let victim = lists
                .iter()
                .min_by_key(|(_, e)| {
                    e.held.as_ref().map_or(i64::MIN, |h| {
                        if h.usable_until <= now {
                            i64::MIN
                        } else {
                            h.fetched_at
                        }
                    })
                })
                .map(|(uri, _)| uri.clone());
            if let Some(uri) = victim {
                lists.remove(&uri);
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        let slot = Arc::new(Slot::new());
        lists.insert(
            uri.into(),
            Entry {
                held: None,
                slot: slot.clone(),
            },
        );
        Ok(slot)
    }

    /// One fetch of the list, unless another made this one needless while
    /// it waited for its turn: a fresh list is there, or a fetch failed
    /// and the retry interval has not passed. `background`: a refresh
    /// before the `ttl` runs out.
    async fn attempt(&self, uri: &str, slot: &Arc<Slot>, now: i64, background: bool) {
        let _turn = slot.fetch.lock().await;
        let held = self.held(uri);
        let needed = held.as_ref().is_none_or(|h| {
            now >= if background {
                h.refresh_from
            } else {
                h.fresh_until
            }
        });
        if !needed || now < slot.retry_at.load(Ordering::Acquire) {
            return;
        }
        let fetched = self.fetch(uri, held.as_deref(), now).await;
        let mut failure = slot.failure.lock().unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Ok(new) => {
                let mut lists = self.lists.write().unwrap_or_else(PoisonError::into_inner);
                let new = Some(Arc::new(new));
                match lists.get_mut(uri) {
                    Some(entry) => entry.held = new,
                    None => {
                        lists.insert(
                            uri.into(),
                            Entry {
                                held: new,
                                slot: slot.clone(),
                            },
                        );
                    }
                }
                self.generation.fetch_add(1, Ordering::AcqRel);
                *failure = None;
                slot.retry_at.store(SUCCEEDED, Ordering::Release);
            }
            Err(why) => {
                *failure = Some(why);
                let retry = duration_millis(self.policy.retry_interval);
                slot.retry_at
                    .store(now.saturating_add(retry), Ordering::Release);
            }
        }
    }

    /// GET the list (conditionally, when a list is held), and verify it.
    async fn fetch(
        &self,
        uri: &str,
        held: Option<&Held>,
        now: i64,
    ) -> Result<Held, StatusListError> {
        let grace = duration_millis(self.policy.grace);
        let mut request = self
            .http
            .get(uri)
            .header(header::ACCEPT, STATUS_LIST_JWT_MEDIA_TYPE)
            .timeout(self.policy.fetch_timeout);
        // A held list whose token has expired cannot be renewed by a 304.
        let revalidate = held
            .filter(|h| h.exp.is_none_or(|exp| now < exp))
            .and_then(|h| Some((h, h.etag.clone()?)));
        if let Some((_, etag)) = &revalidate {
            request = request.header(header::IF_NONE_MATCH, etag.clone());
        }
        let fail = |e: reqwest::Error| StatusListError::Fetch(e.to_string());
        let mut response = request.send().await.map_err(fail)?;
        match (response.status(), &revalidate) {
            (StatusCode::NOT_MODIFIED, Some((held, _))) => return Ok(held.renewed(now, grace)),
            (StatusCode::OK, _) => {}
            (status, _) => return Err(StatusListError::Status(status.as_u16())),
        }
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim);
        if !media_type.is_some_and(|m| m.eq_ignore_ascii_case(STATUS_LIST_JWT_MEDIA_TYPE)) {
            return Err(StatusListError::MediaType);
        }
        let etag = response.headers().get(header::ETAG).cloned();
        // Base64url of the largest list (8 bits a status) that does not
        // compress, and the JWT around it.
        let limit = (self.policy.max_list_len / 2 * 3).saturating_add(16 << 10);
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(StatusListError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fail)? {
            if body.len() + chunk.len() > limit {
                return Err(StatusListError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let token = std::str::from_utf8(&body).map_err(|_| StatusListError::Malformed)?;
        self.verify(uri, token.trim(), now, etag).await
    }

    /// draft-ietf-oauth-status-list §8.3 steps on the list token: `typ`,
    /// the issuer's key with its pinned `alg`, `sub`, `iss`, `exp`, then
    /// the list, inflated within the policy's cap.
    async fn verify(
        &self,
        uri: &str,
        token: &str,
        now: i64,
        etag: Option<HeaderValue>,
    ) -> Result<Held, StatusListError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| StatusListError::Malformed)?;
        if header.typ.as_deref() != Some(STATUS_LIST_TYP) {
            return Err(StatusListError::Typ);
        }
        let kid = header.kid.ok_or(StatusListError::UnknownKey)?;
        if let Some(remote) = &self.remote
            && self.keys.key(&kid).is_none()
        {
            remote.refresh_for(&kid).await;
        }
        let claims: StatusListClaims = verify_jwt(token, STATUS_LIST_TYP, |kid| self.keys.key(kid))
            .map_err(|e| match e {
                VerifyError::UnknownKey => StatusListError::UnknownKey,
                VerifyError::Malformed => StatusListError::Malformed,
                VerifyError::Type => StatusListError::Typ,
                VerifyError::Signature => StatusListError::Signature,
            })?;
        if claims.sub != uri {
            return Err(StatusListError::Sub);
        }
        if claims.iss.as_ref().is_some_and(|iss| *iss != self.issuer) {
            return Err(StatusListError::Iss);
        }
        let exp = claims.exp.map(|exp| exp.saturating_mul(1000));
        if exp.is_some_and(|exp| exp <= now) {
            return Err(StatusListError::Expired);
        }
        let per_byte = match claims.status_list.bits {
            bits @ (1 | 2 | 4 | 8) => usize::from(8 / bits),
            _ => return Err(StatusListError::List(StatusError::Bits)),
        };
        let cap = self.policy.max_list_len.div_ceil(per_byte);
        let list =
            StatusList::from_json(&claims.status_list, cap).map_err(StatusListError::List)?;
        let (min, max) = (
            duration_millis(self.policy.min_ttl),
            duration_millis(self.policy.max_ttl),
        );
        let ttl = claims
            .ttl
            .map_or(max, |ttl| ttl.saturating_mul(1000))
            .clamp(min.min(max), max);
        Ok(Held::new(
            Arc::new(list),
            etag,
            now,
            ttl,
            exp,
            duration_millis(self.policy.grace),
        ))
    }
}

/// FxHash (rustc's): the lists' URIs are few and come from signed tokens
/// at the issuer's origin, so the warm path needs no flood-resistant
/// hash, and SipHash of a URL would be most of its cost.
#[derive(Default)]
struct UriHasher(u64);

impl UriHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for UriHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.add(u64::from_le_bytes(w));
        }
        for &b in words.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A test issuer: an HTTP server on 127.0.0.1 serving one status list
/// token (signed with an ES256 test key), its JWKS and RFC 8414 metadata,
/// counting requests, with knobs for every way a list can be wrong.
#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    use crate::jwt::StaticKeys;
    use crate::status::{StatusClaim, StatusList, StatusListRef};

    /// The tests' clock: Unix seconds where lists are signed.
    pub const T0: i64 = 1_800_000_000;

    /// `T0 + seconds` as a `SystemTime`.
    pub fn at(seconds: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs_f64(T0 as f64 + seconds)
    }

    pub struct Key {
        pub kid: String,
        pub encoding: EncodingKey,
        pub jwk: Value,
    }

    pub fn key(kid: &str) -> Arc<Key> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Arc::new(Key {
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                        "x": b64(&public[1..33]), "y": b64(&public[33..65])}),
        })
    }

    impl Key {
        pub fn sign(&self, typ: &str, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(self.kid.clone());
            header.typ = Some(typ.into());
            jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
        }
    }

    /// What the issuer serves at `/statuslists/1`; every field may be
    /// made wrong.
    pub struct Served {
        /// 16 statuses of one bit, all valid.
        pub list: StatusList,
        pub ttl: Option<i64>,
        pub exp: Option<i64>,
        pub typ: String,
        /// `None`: the list's uri.
        pub sub: Option<String>,
        /// `None`: the issuer.
        pub iss: Option<String>,
        pub signer: Arc<Key>,
        /// Replaces the compressed list.
        pub lst: Option<String>,
        pub content_type: String,
        /// Answer this status instead of the list.
        pub answer: Option<u16>,
        version: u64,
        token: Option<String>,
    }

    #[derive(Clone)]
    pub struct TestIssuer {
        pub url: String,
        pub key: Arc<Key>,
        pub served: Arc<Mutex<Served>>,
        pub jwks: Arc<Mutex<Value>>,
        /// GETs of the list, and of them those answered 304.
        pub fetches: Arc<AtomicUsize>,
        pub not_modified: Arc<AtomicUsize>,
        pub jwks_fetches: Arc<AtomicUsize>,
        /// While false, list requests wait (after being counted).
        gate: Arc<tokio::sync::watch::Sender<bool>>,
    }

    impl TestIssuer {
        pub async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let key = key("k1");
            let issuer = Self {
                url: url.clone(),
                key: key.clone(),
                served: Arc::new(Mutex::new(Served {
                    list: StatusList::new(1, 16).unwrap(),
                    ttl: Some(1),
                    exp: Some(T0 + 3600),
                    typ: "statuslist+jwt".into(),
                    sub: None,
                    iss: None,
                    signer: key.clone(),
                    lst: None,
                    content_type: "application/statuslist+jwt".into(),
                    answer: None,
                    version: 0,
                    token: None,
                })),
                jwks: Arc::new(Mutex::new(json!({"keys": [key.jwk]}))),
                fetches: Arc::default(),
                not_modified: Arc::default(),
                jwks_fetches: Arc::default(),
                gate: Arc::new(tokio::sync::watch::channel(true).0),
            };
            let app = {
                let (metadata_url, jwks, jwks_fetches) = (
                    url.clone(),
                    issuer.jwks.clone(),
                    issuer.jwks_fetches.clone(),
                );
                let lists = issuer.clone();
                axum::Router::new()
                    .route(
                        "/.well-known/oauth-authorization-server",
                        axum::routing::get(move || {
                            let url = metadata_url.clone();
                            async move {
                                json!({"issuer": url, "jwks_uri": format!("{url}/jwks.json")})
                                    .to_string()
                            }
                        }),
                    )
                    .route(
                        "/jwks.json",
                        axum::routing::get(move || {
                            jwks_fetches.fetch_add(1, Ordering::SeqCst);
                            let jwks = jwks.lock().unwrap().to_string();
                            async move { jwks }
                        }),
                    )
                    .route(
                        "/statuslists/1",
                        axum::routing::get(move |headers: http::HeaderMap| {
                            let issuer = lists.clone();
                            async move { issuer.answer(&headers).await }
                        }),
                    )
            };
            tokio::spawn(async move { axum::serve(listener, app).await });
            issuer
        }

        async fn answer(&self, request: &http::HeaderMap) -> http::Response<String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let _ = self.gate.subscribe().wait_for(|open| *open).await;
            let mut served = self.served.lock().unwrap();
            if let Some(status) = served.answer {
                return http::Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap();
            }
            let etag = format!("\"v{}\"", served.version);
            let response = http::Response::builder()
                .header("etag", &etag)
                .header("cache-control", "no-cache");
            if request
                .get("if-none-match")
                .is_some_and(|v| v.as_bytes() == etag.as_bytes())
            {
                self.not_modified.fetch_add(1, Ordering::SeqCst);
                return response.status(304).body(String::new()).unwrap();
            }
            let token = match &served.token {
                Some(token) => token.clone(),
                None => {
                    let mut json = serde_json::to_value(served.list.to_json()).unwrap();
                    if let Some(lst) = &served.lst {
                        json["lst"] = lst.clone().into();
                    }
                    let mut claims = json!({
                        "sub": served.sub.clone().unwrap_or_else(|| self.uri()),
                        "iss": served.iss.clone().unwrap_or_else(|| self.url.clone()),
                        "iat": T0, "status_list": json,
                    });
                    if let Some(ttl) = served.ttl {
                        claims["ttl"] = ttl.into();
                    }
                    if let Some(exp) = served.exp {
                        claims["exp"] = exp.into();
                    }
                    let token = served.signer.sign(&served.typ, &claims);
                    served.token = Some(token.clone());
                    token
                }
            };
            response
                .header("content-type", &served.content_type)
                .body(token)
                .unwrap()
        }

        /// The list's uri.
        pub fn uri(&self) -> String {
            format!("{}/statuslists/1", self.url)
        }

        /// The `status` claim of index `idx` of the list.
        pub fn claim(&self, idx: u64) -> StatusClaim {
            StatusClaim {
                status_list: StatusListRef {
                    idx,
                    uri: self.uri(),
                },
            }
        }

        /// The issuer's keys, as its JWKS has them now.
        pub fn keys(&self) -> StaticKeys {
            StaticKeys::from_jwks(
                &serde_json::from_value(self.jwks.lock().unwrap().clone()).unwrap(),
            )
        }

        /// Changes what is served (a new representation, a new `ETag`).
        pub fn set(&self, change: impl FnOnce(&mut Served)) {
            let mut served = self.served.lock().unwrap();
            change(&mut served);
            served.version += 1;
            served.token = None;
        }

        /// Revokes token `idx`.
        pub fn revoke(&self, idx: usize) {
            self.set(|s| s.list.set(idx, crate::status::INVALID).unwrap());
        }

        pub fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        /// Holds list requests (after counting them) until [`Self::open`].
        pub fn close(&self) {
            self.gate.send_replace(false);
        }

        pub fn open(&self) {
            self.gate.send_replace(true);
        }
    }

    /// Waits (polling, at most 5 s) until `done`.
    pub async fn eventually(mut done: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::testing::{T0, TestIssuer, at, eventually, key};
    use super::*;

    fn policy() -> StatusListPolicy {
        StatusListPolicy::default()
    }

    fn cache(issuer: &TestIssuer, policy: StatusListPolicy) -> StatusListCache {
        StatusListCache::new(issuer.url.clone(), Arc::new(issuer.keys()), policy).unwrap()
    }

    const UNAVAILABLE: ResourceError = ResourceError::StatusListUnavailable { retry_after: 1 };

    /// §8.3: status 0 passes, 1 is refused as revoked (401
    /// `invalid_token`, like any token failure), 2 as suspended, and
    /// another value as not valid.
    #[tokio::test]
    async fn valid_passes_and_every_other_status_is_refused() {
        let issuer = TestIssuer::start().await;
        issuer.set(|s| {
            s.list = StatusList::new(2, 8).unwrap();
            s.list.set(1, INVALID).unwrap();
            s.list.set(2, SUSPENDED).unwrap();
            s.list.set(3, 3).unwrap();
        });
        let lists = cache(&issuer, policy());
        assert_eq!(lists.check(Some(&issuer.claim(0)), at(0.0)).await, Ok(()));
        assert_eq!(
            lists.check(Some(&issuer.claim(1)), at(0.0)).await,
            Err(REVOKED)
        );
        assert_eq!(
            lists.check(Some(&issuer.claim(2)), at(0.0)).await,
            Err(SUSPENDED_TOKEN)
        );
        assert_eq!(
            lists.check(Some(&issuer.claim(3)), at(0.0)).await,
            Err(NOT_VALID)
        );
        assert_eq!(issuer.fetches(), 1, "one fetch serves every index");

        let (status, headers) = REVOKED.headers();
        assert_eq!(status, 401);
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with(
            r#"Bearer error="invalid_token", error_description="the token has been revoked""#
        ));
    }

    #[tokio::test]
    async fn an_index_outside_the_list_is_refused() {
        let issuer = TestIssuer::start().await;
        let lists = cache(&issuer, policy());
        assert_eq!(lists.check(Some(&issuer.claim(15)), at(0.0)).await, Ok(()));
        for idx in [16, u64::MAX] {
            assert_eq!(
                lists.check(Some(&issuer.claim(idx)), at(0.0)).await,
                Err(OUTSIDE),
                "{idx}"
            );
        }
    }

    /// Tokens of servers from before status lists carry no `status`:
    /// accepted unless the policy requires one.
    #[tokio::test]
    async fn a_token_without_status_passes_unless_required() {
        let issuer = TestIssuer::start().await;
        assert_eq!(cache(&issuer, policy()).check(None, at(0.0)).await, Ok(()));
        let requiring = StatusListPolicy {
            require_status: true,
            ..policy()
        };
        assert_eq!(
            cache(&issuer, requiring).check(None, at(0.0)).await,
            Err(NO_STATUS)
        );
        assert_eq!(issuer.fetches(), 0);
    }

    /// A list is kept for its `ttl` (1 s here) and no longer: a bit set
    /// at the issuer refuses the token at the first request past the ttl.
    #[tokio::test]
    async fn a_revocation_is_refused_once_the_ttl_has_passed() {
        let issuer = TestIssuer::start().await;
        let lists = cache(&issuer, policy());
        let claim = issuer.claim(5);
        assert_eq!(lists.check(Some(&claim), at(0.0)).await, Ok(()));
        issuer.revoke(5);
        assert_eq!(
            lists.check(Some(&claim), at(0.5)).await,
            Ok(()),
            "the list is kept for its ttl"
        );
        assert_eq!(issuer.fetches(), 1);
        assert_eq!(lists.check(Some(&claim), at(1.0)).await, Err(REVOKED));
        assert_eq!(issuer.fetches(), 2);
    }

    /// The `ttl` is clamped to the policy's bounds: a list saying 3600 s
    /// is fetched again after `max_ttl`, one saying 0 s only after
    /// `min_ttl`.
    #[tokio::test]
    async fn the_ttl_is_clamped_to_the_policy() {
        let issuer = TestIssuer::start().await;
        let bounded = StatusListPolicy {
            min_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(10),
            ..policy()
        };
        let lists = cache(&issuer, bounded.clone());
        issuer.set(|s| s.ttl = Some(3600));
        lists.check(Some(&issuer.claim(0)), at(0.0)).await.unwrap();
        lists.check(Some(&issuer.claim(0)), at(9.9)).await.unwrap();
        assert_eq!(issuer.fetches(), 1);
        lists.check(Some(&issuer.claim(0)), at(10.0)).await.unwrap();
        assert_eq!(issuer.fetches(), 2);

        let lists = cache(&issuer, bounded);
        issuer.set(|s| s.ttl = Some(0));
        lists.check(Some(&issuer.claim(0)), at(0.0)).await.unwrap();
        lists.check(Some(&issuer.claim(0)), at(1.9)).await.unwrap();
        assert_eq!(issuer.fetches(), 3);
        lists.check(Some(&issuer.claim(0)), at(2.0)).await.unwrap();
        assert_eq!(issuer.fetches(), 4);
    }

    /// However many requests find no list, one fetch is made, and they all
    /// get its answer.
    #[tokio::test]
    async fn concurrent_requests_on_a_cold_cache_make_one_fetch() {
        let issuer = TestIssuer::start().await;
        issuer.revoke(7);
        let lists = cache(&issuer, policy());
        issuer.close();
        let requests: Vec<_> = (0..32u64)
            .map(|i| {
                let (lists, claim) = (lists.clone(), issuer.claim(i % 8));
                tokio::spawn(async move { lists.check(Some(&claim), at(0.0)).await })
            })
            .collect();
        eventually(|| issuer.fetches() == 1).await;
        // Every request is waiting for that one fetch.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(requests.iter().all(|r| !r.is_finished()));
        issuer.open();
        for (i, request) in requests.into_iter().enumerate() {
            let expected = if i % 8 == 7 { Err(REVOKED) } else { Ok(()) };
            assert_eq!(request.await.unwrap(), expected, "{i}");
        }
        assert_eq!(issuer.fetches(), 1);
    }

    /// Past 3/4 of its `ttl` a request starts one refresh and does not
    /// wait for it; the refreshed list replaces the old one before the
    /// `ttl` runs out, so no request has to wait.
    #[tokio::test]
    async fn a_list_is_refreshed_in_the_background_before_its_ttl_runs_out() {
        let issuer = TestIssuer::start().await;
        issuer.set(|s| s.ttl = Some(4));
        let lists = cache(&issuer, policy());
        let claim = issuer.claim(2);
        lists.check(Some(&claim), at(0.0)).await.unwrap();
        lists.check(Some(&claim), at(2.9)).await.unwrap();
        assert_eq!(issuer.fetches(), 1, "no refresh before 3/4 of the ttl");

        issuer.close();
        for t in [3.0, 3.1, 3.5] {
            let answered =
                tokio::time::timeout(Duration::from_secs(1), lists.check(Some(&claim), at(t)))
                    .await;
            assert_eq!(answered, Ok(Ok(())), "answered at once from the held list");
        }
        eventually(|| issuer.fetches() == 2).await;
        issuer.revoke(2);
        issuer.open();
        eventually(|| {
            lists
                .inner
                .held(&issuer.uri())
                .is_some_and(|h| h.fetched_at == T0 * 1000 + 3000)
        })
        .await;
        assert_eq!(lists.check(Some(&claim), at(3.9)).await, Err(REVOKED));
        // Fresh until 3 + 4 s: no request waited, no other fetch.
        assert_eq!(lists.check(Some(&claim), at(6.9)).await, Err(REVOKED));
        assert_eq!(issuer.fetches(), 2);
    }

    /// RFC 9110 §13.1.2: the held list's `ETag` goes in `If-None-Match`,
    /// and a 304 keeps the list for another `ttl`.
    #[tokio::test]
    async fn a_304_renews_the_held_list() {
        let issuer = TestIssuer::start().await;
        let lists = cache(&issuer, policy());
        let claim = issuer.claim(4);
        lists.check(Some(&claim), at(0.0)).await.unwrap();
        lists.check(Some(&claim), at(1.0)).await.unwrap();
        assert_eq!(issuer.fetches(), 2);
        assert_eq!(
            issuer
                .not_modified
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        lists.check(Some(&claim), at(1.9)).await.unwrap();
        assert_eq!(issuer.fetches(), 2, "renewed until 1 + 1 s");
        issuer.revoke(4);
        assert_eq!(lists.check(Some(&claim), at(2.0)).await, Err(REVOKED));
        assert_eq!(
            issuer
                .not_modified
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    /// When the list cannot be fetched: the last good list for the grace
    /// past its ttl (requests do not wait for the retries, at most one a
    /// `retry_interval`), then 503 with `Retry-After`; back to normal at
    /// the first fetch that succeeds.
    #[tokio::test]
    async fn a_failed_fetch_keeps_the_last_list_for_the_grace_then_503() {
        let issuer = TestIssuer::start().await;
        let lists = cache(
            &issuer,
            StatusListPolicy {
                grace: Duration::from_secs(5),
                ..policy()
            },
        );
        let claim = issuer.claim(3);
        lists.check(Some(&claim), at(0.0)).await.unwrap();
        issuer.revoke(3);
        issuer.set(|s| s.answer = Some(500));

        assert_eq!(lists.check(Some(&claim), at(1.0)).await, Ok(()), "in grace");
        assert_eq!(issuer.fetches(), 2);
        assert_eq!(
            lists.last_error(&issuer.uri()),
            Some(StatusListError::Status(500))
        );
        assert_eq!(lists.check(Some(&claim), at(1.5)).await, Ok(()));
        assert_eq!(issuer.fetches(), 2, "no retry within the retry interval");
        assert_eq!(lists.check(Some(&claim), at(2.0)).await, Ok(()));
        eventually(|| issuer.fetches() == 3).await;

        // Grace over (1 s ttl + 5 s): refused, the retry made in the request.
        let err = lists.check(Some(&claim), at(6.0)).await.unwrap_err();
        assert_eq!(err, UNAVAILABLE);
        assert_eq!(issuer.fetches(), 4);
        let (status, headers) = err.headers();
        assert_eq!(status, 503);
        assert_eq!(headers["retry-after"], "1");
        assert!(headers.get("www-authenticate").is_none());
        // Within the retry interval: refused at once, no fetch.
        assert_eq!(lists.check(Some(&claim), at(6.2)).await, Err(UNAVAILABLE));
        assert_eq!(issuer.fetches(), 4);

        issuer.set(|s| s.answer = None);
        assert_eq!(lists.check(Some(&claim), at(7.0)).await, Err(REVOKED));
        assert_eq!(lists.last_error(&issuer.uri()), None);
    }

    /// The grace never outlasts the list token's `exp`.
    #[tokio::test]
    async fn the_grace_ends_at_the_list_tokens_exp() {
        let issuer = TestIssuer::start().await;
        issuer.set(|s| s.exp = Some(T0 + 3));
        let lists = cache(&issuer, policy());
        let claim = issuer.claim(0);
        lists.check(Some(&claim), at(0.0)).await.unwrap();
        issuer.set(|s| s.answer = Some(503));
        assert_eq!(lists.check(Some(&claim), at(2.9)).await, Ok(()));
        assert_eq!(lists.check(Some(&claim), at(3.0)).await, Err(UNAVAILABLE));
    }

    /// A list never fetched, and unreachable: 503 at once, and one
    /// attempt per retry interval however many requests come.
    #[tokio::test]
    async fn an_unreachable_list_never_fetched_is_503() {
        let issuer = TestIssuer::start().await;
        issuer.set(|s| s.answer = Some(500));
        let lists = cache(
            &issuer,
            StatusListPolicy {
                retry_interval: Duration::from_secs(3),
                ..policy()
            },
        );
        let claim = issuer.claim(0);
        assert_eq!(
            lists.check(Some(&claim), at(0.0)).await,
            Err(ResourceError::StatusListUnavailable { retry_after: 3 })
        );
        assert_eq!(
            lists.check(Some(&claim), at(1.5)).await,
            Err(ResourceError::StatusListUnavailable { retry_after: 2 })
        );
        assert_eq!(issuer.fetches(), 1);

        // Nothing listening at the issuer's address: the same.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let lists = StatusListCache::new(gone.clone(), Arc::new(issuer.keys()), policy()).unwrap();
        let claim = StatusClaim {
            status_list: StatusListRef {
                idx: 0,
                uri: format!("{gone}/statuslists/1"),
            },
        };
        assert_eq!(lists.check(Some(&claim), at(0.0)).await, Err(UNAVAILABLE));
        assert!(matches!(
            lists.last_error(&claim.status_list.uri),
            Some(StatusListError::Fetch(_))
        ));
    }

    /// draft §8.3 on the list token, and the cap on inflating: a list
    /// token that fails a check is not used (a cold cache answers 503),
    /// for the reason [`StatusListCache::last_error`] gives.
    #[tokio::test]
    async fn list_tokens_that_fail_a_check_are_not_used() {
        let stranger = key("k9");
        let impostor = key("k1");
        // 1 MiB of zeros compresses to about a kilobyte; read as the
        // served list's one bit a status, the cap is 2^19 / 8 bytes.
        let bomb = StatusList::new(8, 1 << 20).unwrap().to_json().lst;
        type Change = Box<dyn Fn(&mut testing::Served)>;
        let cases: Vec<(&str, Change, StatusListError)> = vec![
            (
                "typ JWT",
                Box::new(|s| s.typ = "JWT".into()),
                StatusListError::Typ,
            ),
            (
                "typ with application/",
                Box::new(|s| s.typ = "application/statuslist+jwt".into()),
                StatusListError::Typ,
            ),
            (
                "sub",
                Box::new(|s| s.sub = Some("http://127.0.0.1/statuslists/2".into())),
                StatusListError::Sub,
            ),
            (
                "iss",
                Box::new(|s| s.iss = Some("https://other.example".into())),
                StatusListError::Iss,
            ),
            (
                "unknown kid",
                Box::new(move |s| s.signer = stranger.clone()),
                StatusListError::UnknownKey,
            ),
            (
                "foreign key under our kid",
                Box::new(move |s| s.signer = impostor.clone()),
                StatusListError::Signature,
            ),
            (
                "expired",
                Box::new(|s| s.exp = Some(T0)),
                StatusListError::Expired,
            ),
            (
                "inflate bomb",
                Box::new(move |s| s.lst = Some(bomb.clone())),
                StatusListError::List(StatusError::TooLarge(1 << 16)),
            ),
            (
                "not a list",
                Box::new(|s| s.lst = Some("AAAA".into())),
                StatusListError::List(StatusError::Inflate),
            ),
            (
                "media type",
                Box::new(|s| s.content_type = "application/json".into()),
                StatusListError::MediaType,
            ),
            (
                "404",
                Box::new(|s| s.answer = Some(404)),
                StatusListError::Status(404),
            ),
        ];
        for (case, change, why) in cases {
            let issuer = TestIssuer::start().await;
            issuer.set(change);
            let lists = cache(
                &issuer,
                StatusListPolicy {
                    max_list_len: 1 << 19,
                    ..policy()
                },
            );
            assert_eq!(
                lists.check(Some(&issuer.claim(0)), at(0.0)).await,
                Err(UNAVAILABLE),
                "{case}"
            );
            assert_eq!(lists.last_error(&issuer.uri()), Some(why), "{case}");
        }
    }

    /// A list must be at the issuer's origin: any other `uri` is refused
    /// without a request to it.
    #[tokio::test]
    async fn a_list_at_another_origin_is_refused_without_fetching() {
        let issuer = TestIssuer::start().await;
        let elsewhere = TestIssuer::start().await;
        let lists = cache(&issuer, policy());
        let port = issuer.url.rsplit(':').next().unwrap().to_string();
        for uri in [
            elsewhere.uri(),
            format!("https://127.0.0.1:{port}/statuslists/1"),
            format!("http://user@127.0.0.1:{port}/statuslists/1"),
            format!("http://localhost:{port}/statuslists/1"),
            "file:///etc/passwd".to_string(),
            "not a url".to_string(),
        ] {
            let claim = StatusClaim {
                status_list: StatusListRef {
                    idx: 0,
                    uri: uri.clone(),
                },
            };
            assert_eq!(
                lists.check(Some(&claim), at(0.0)).await,
                Err(FOREIGN),
                "{uri}"
            );
        }
        assert_eq!(elsewhere.fetches(), 0);
        assert_eq!(issuer.fetches(), 0);
        assert!(lists.inner.read().is_empty());
    }

    /// A list token signed by a key the JWKS did not have when it was
    /// read (a rotation) is verified after refetching the JWKS, as an
    /// access token would be.
    #[tokio::test]
    async fn a_list_under_a_new_kid_refetches_the_issuers_keys() {
        let issuer = TestIssuer::start().await;
        let mut keys = RemoteKeys::discover(&issuer.url).await.unwrap();
        keys.min_refetch = Duration::ZERO;
        let lists = StatusListCache::remote(Arc::new(keys), policy()).unwrap();
        let rotated = key("k2");
        issuer.jwks.lock().unwrap()["keys"]
            .as_array_mut()
            .unwrap()
            .push(rotated.jwk.clone());
        issuer.set(|s| s.signer = rotated.clone());
        assert_eq!(
            issuer
                .jwks_fetches
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(lists.check(Some(&issuer.claim(0)), at(0.0)).await, Ok(()));
        assert_eq!(
            issuer
                .jwks_fetches
                .load(std::sync::atomic::Ordering::SeqCst),
            2
        );
    }

    /// The cache holds at most `max_lists` lists, dropping the one
    /// fetched longest ago, even while a thread's memo still holds it;
    /// a dropped list is fetched again when a token points into it.
    #[tokio::test]
    async fn the_cache_holds_at_most_max_lists() {
        let issuer = TestIssuer::start().await;
        let lists = cache(
            &issuer,
            StatusListPolicy {
                max_lists: 1,
                ..policy()
            },
        );
        lists.check(Some(&issuer.claim(0)), at(0.0)).await.unwrap();
        // From the memo of this thread's last list.
        lists.check(Some(&issuer.claim(0)), at(0.1)).await.unwrap();
        let other = StatusClaim {
            status_list: StatusListRef {
                idx: 0,
                uri: format!("{}/statuslists/2", issuer.url),
            },
        };
        // Not served: 503, but it took the place of the first list.
        assert_eq!(lists.check(Some(&other), at(0.2)).await, Err(UNAVAILABLE));
        assert_eq!(lists.inner.read().len(), 1);
        assert!(lists.inner.held(&issuer.uri()).is_none());
        assert_eq!(issuer.fetches(), 1);
        lists.check(Some(&issuer.claim(0)), at(0.3)).await.unwrap();
        assert_eq!(issuer.fetches(), 2, "fetched again, not read from the memo");
    }

    /// Each cache answers from its own list, though one thread reads both
    /// in turn (the thread's memo of its last list names its cache).
    #[tokio::test]
    async fn two_caches_read_in_turn_answer_from_their_own_lists() {
        let issuer = TestIssuer::start().await;
        let before = cache(&issuer, policy());
        let claim = issuer.claim(6);
        before.check(Some(&claim), at(0.0)).await.unwrap();
        issuer.revoke(6);
        let after = cache(&issuer, policy());
        for _ in 0..3 {
            assert_eq!(before.check(Some(&claim), at(0.1)).await, Ok(()));
            assert_eq!(after.check(Some(&claim), at(0.1)).await, Err(REVOKED));
        }
        drop(before);
        let again = cache(&issuer, policy());
        assert_eq!(again.check(Some(&claim), at(0.2)).await, Err(REVOKED));
    }

    #[test]
    fn the_uri_hasher_spreads_lists() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<UriHasher>::default();
        let a = build.hash_one("https://as.example/statuslists/1");
        let b = build.hash_one("https://as.example/statuslists/2");
        assert_ne!(a, b);
    }
}
