//! Proof-of-work login (issue 15): the proof of work itself, the
//! difficulty policy, and the hub that wakes the site's SSE listeners when
//! a request resolves, on this node or, through PostgreSQL
//! `LISTEN/NOTIFY`, on any other.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::Notify;

use crate::agents::Agents;
use crate::config::Config;
use crate::error::OAuthError;
use crate::oauth::client_kind::ClientKind;
use crate::store::clients::ClientRecord;

/// Whether someone vouched for the site: an operator created it, or it
/// registered with an operator's initial access token. Its registered name
/// is then shown to agents as verified; anyone else's name is
/// self-asserted.
pub fn site_verified(site: &ClientRecord) -> bool {
    matches!(site.kind, ClientKind::Operator | ClientKind::InitialToken)
}

/// Whether `site` may run proof-of-work login: the pow-login grant among
/// its registered `grant_types` (RFC 7591 §2), and a site someone vouched
/// for, unless the operator opened it to unvouched sites
/// (`--pow-login-unvouched`). Agents are not sites. Checked when a request
/// is created and again when its passport is delivered, on both channels
/// (SECURITY.md, Proof-of-work login boundaries). RFC 6749 §5.2
/// `unauthorized_client` otherwise.
pub fn check_site(config: &Config, site: &ClientRecord) -> Result<(), OAuthError> {
    if !site
        .metadata
        .allows_grant(crate::oauth::grant_type::POW_LOGIN)
    {
        return Err(OAuthError::unauthorized_client(format!(
            "client is not registered for the {} grant",
            crate::oauth::grant_type::POW_LOGIN
        )));
    }
    match site.kind {
        ClientKind::Operator | ClientKind::InitialToken => Ok(()),
        ClientKind::Dynamic | ClientKind::MetadataDocument if config.pow_login_unvouched => Ok(()),
        ClientKind::Dynamic | ClientKind::MetadataDocument => Err(OAuthError::unauthorized_client(
            "proof-of-work login is for sites an operator vouched for (created, or registered with an initial access token)",
        )),
        // Agents (and any kind added later) are not sites.
        _ => Err(OAuthError::unauthorized_client(
            "only a site (not an agent) can ask for proof-of-work login",
        )),
    }
}

/// Open event streams of this node: all of them, and per site.
#[derive(Default)]
pub struct StreamCounts {
    pub total: u32,
    pub by_site: std::collections::HashMap<String, u32>,
}

/// The PostgreSQL channel resolutions are announced on (payload: the id).
pub const CHANNEL: &str = "agentauth_login_requests";

/// Leading zero bits of a SHA-256 digest.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// Whether SHA-256(challenge ‖ nonce) has at least `difficulty` leading
/// zero bits. Both are the strings as sent (ASCII).
pub fn solves(challenge: &str, nonce: &str, difficulty: u32) -> bool {
    let mut input = Vec::with_capacity(challenge.len() + nonce.len());
    input.extend_from_slice(challenge.as_bytes());
    input.extend_from_slice(nonce.as_bytes());
    leading_zero_bits(&crate::crypto::sha256(&input)) >= difficulty
}

/// Finds a nonce (decimal) for `challenge` (what an agent does; the
/// examples and tests use it).
pub fn solve(challenge: &str, difficulty: u32) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|nonce| solves(challenge, nonce, difficulty))
        .unwrap_or_default()
}

/// The difficulty for the next challenge of a party (a site or an agent)
/// that asked for `recent` challenges in the last minute: the base, plus
/// one bit per doubling beyond `free` a minute, at most +8 (each bit
/// doubles the expected work).
pub fn difficulty(base: u32, recent: u64, free: u64) -> u32 {
    let free = free.max(1);
    if recent <= free {
        return base;
    }
    let excess = (recent / free).max(1);
    base + (63 - excess.leading_zeros()).min(7) + 1
}

/// Wakes SSE listeners of one login request, and ends every stream when
/// the server shuts down (graceful shutdown waits for open connections;
/// the site's SSE client reconnects to another node).
pub struct LoginHub {
    waiters: Cache<String, Arc<Notify>>,
    closing: tokio::sync::watch::Sender<bool>,
    /// Open event streams (SECURITY.md, "Proof-of-work login": capped per node and per
    /// site, besides per address).
    pub streams: std::sync::Mutex<StreamCounts>,
}

impl Default for LoginHub {
    fn default() -> Self {
        Self {
            waiters: Cache::builder()
                .max_capacity(1_000_000)
                // Longer than any request lives (with its grace).
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            closing: tokio::sync::watch::Sender::new(false),
            streams: Default::default(),
        }
    }
}

impl LoginHub {
    /// Ends every waiting stream.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves when the server is shutting down.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// The waker of request `id` (listeners call `notified()` on it before
    /// they read the row, so that no resolution is missed in between).
    pub fn waker(&self, id: &str) -> Arc<Notify> {
        self.waiters.get_with_by_ref(id, || Arc::new(Notify::new()))
    }

    /// Wakes every listener of this node (they read their rows again):
    /// after the NOTIFY listener (re)connects, announcements made while it
    /// was away are not lost.
    pub fn wake_all(&self) {
        for (_, n) in self.waiters.iter() {
            n.notify_waiters();
        }
    }

    /// Wakes this node's listeners of `id`.
    pub fn wake(&self, id: &str) {
        if let Some(n) = self.waiters.get(id) {
            n.notify_waiters();
        }
    }
}

/// Announces that `id` resolved: this node's listeners at once, other
/// nodes' through `NOTIFY` (PostgreSQL; SQLite is one node).
pub async fn announce(agents: &Agents, id: &str) {
    agents.login_hub.wake(id);
    if crate::store::is_shared(&agents.db)
        && let Err(e) = crate::store::notify(&agents.db, CHANNEL, id).await
    {
        // Listeners elsewhere still see the outcome at their next
        // heartbeat re-read.
        tracing::warn!(error = %e, "NOTIFY of a login request failed");
    }
}

/// On PostgreSQL: listens for other nodes' announcements and wakes this
/// node's listeners. Reconnects after a lost connection.
pub fn spawn_listener(agents: Arc<Agents>) -> Option<tokio::task::JoinHandle<()>> {
    if !crate::store::is_shared(&agents.db) {
        return None;
    }
    let pool = agents.db.get_postgres_connection_pool().clone();
    Some(tokio::spawn(async move {
        loop {
            match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    } else {
                        agents.login_hub.wake_all();
                        loop {
                            match listener.recv().await {
                                Ok(n) => agents.login_hub.wake(n.payload()),
                                Err(e) => {
                                    tracing::warn!(error = %e, "login request listener lost its connection");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "login request listener cannot connect"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bits_are_counted_across_bytes() {
        assert_eq!(leading_zero_bits(&[0xff]), 0);
        assert_eq!(leading_zero_bits(&[0x00, 0x80]), 8);
        assert_eq!(leading_zero_bits(&[0x00, 0x01]), 15);
        assert_eq!(leading_zero_bits(&[0x00, 0x00]), 16);
    }

    #[test]
    fn a_solution_solves_and_a_harder_one_usually_does_not() {
        let nonce = solve("challenge-1", 12);
        assert!(solves("challenge-1", &nonce, 12));
        assert!(!solves("challenge-2", "", 256));
    }

    #[test]
    fn difficulty_rises_with_the_rate() {
        assert_eq!(difficulty(15, 0, 10), 15);
        assert_eq!(difficulty(15, 10, 10), 15);
        assert_eq!(difficulty(15, 11, 10), 16);
        assert_eq!(difficulty(15, 20, 10), 17);
        assert_eq!(difficulty(15, 40, 10), 18);
        assert_eq!(difficulty(15, 1_000_000, 10), 23);
    }
}
