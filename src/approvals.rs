//! Backchannel approvals (OpenID CIBA Core 1.0, issue 32): what the
//! request endpoint, the owner's console and the grant share that is not
//! storage. An owner's open approvals pages are woken through the login
//! hub (key `approvals:<user id>`, and PostgreSQL `NOTIFY` between nodes);
//! ping-mode clients are notified through the SSRF-guarded fetcher.
//!
//! What a ping needs is secret-ish: the `auth_req_id` (which, with the
//! client's credentials, redeems the token) and the client's
//! `client_notification_token` (its bearer credential for its own
//! endpoint). Both are sealed with a key derived from the KEK; the row
//! otherwise holds only the `auth_req_id`'s SHA-256.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::agents::Agents;
use crate::crypto::{Kek, KekError};
use crate::fetch::Fetcher;
use crate::store::Db;
use crate::store::backchannel::{self, BackchannelRow};

/// The hub key of one owner's approvals pages.
pub fn hub_key(user_id: &str) -> String {
    format!("approvals:{user_id}")
}

/// Wakes the owner's open approvals pages, on every node.
pub async fn announce(agents: &Agents, user_id: &str) {
    crate::agents::login::announce(agents, &hub_key(user_id)).await;
}

/// What a ping carries, sealed in the row.
#[derive(Deserialize)]
struct Ping {
    auth_req_id: String,
    token: String,
}

pub struct Approvals {
    seal: Kek,
    fetcher: Fetcher,
}

/// Attempts at a ping, and the wait before each retry.
const PING_RETRIES: [Duration; 3] = [
    Duration::from_millis(0),
    Duration::from_secs(1),
    Duration::from_secs(4),
];

impl Approvals {
    pub fn new(kek: &Kek, fetcher: Fetcher) -> Result<Self, KekError> {
        Ok(Self {
            seal: Kek::from_bytes(&kek.derive(b"agentauth backchannel ping v1"))?,
            fetcher,
        })
    }

    /// Seals a ping-mode request's `auth_req_id` and notification token,
    /// bound to the request's id.
    pub fn seal_ping(
        &self,
        id: &str,
        auth_req_id: &str,
        token: &str,
    ) -> Result<Vec<u8>, crate::crypto::RandomError> {
        let plain = json!({ "auth_req_id": auth_req_id, "token": token }).to_string();
        self.seal.seal(id.as_bytes(), plain.as_bytes())
    }

    /// CIBA Core §10.2: tells a ping-mode client that its request was
    /// answered (once, on whichever node answered it). Runs in the
    /// background; a client that is not reached learns the answer when it
    /// next asks the token endpoint.
    pub fn ping(self: &std::sync::Arc<Self>, db: Db, row: BackchannelRow, now: i64) {
        let (Some(endpoint), Some(sealed)) =
            (row.notify_endpoint.clone(), row.notify_sealed.clone())
        else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            match backchannel::take_ping(&db, &row.id, now).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, request = %row.id, "claiming a ping failed");
                    return;
                }
            }
            let ping: Ping = match this
                .seal
                .open(row.id.as_bytes(), &sealed)
                .ok()
                .and_then(|plain| serde_json::from_slice(&plain).ok())
            {
                Some(p) => p,
                None => {
                    tracing::error!(request = %row.id, "a ping's sealed data does not open");
                    return;
                }
            };
            let body = json!({ "auth_req_id": ping.auth_req_id }).to_string();
            let authorization = format!("Bearer {}", ping.token);
            for wait in PING_RETRIES {
                tokio::time::sleep(wait).await;
                match this
                    .fetcher
                    .post(
                        &endpoint,
                        "application/json",
                        "application/json",
                        Some(&authorization),
                        body.clone().into_bytes(),
                    )
                    .await
                {
                    Ok((status, _)) if (200..300).contains(&status) => return,
                    Ok((status, _)) => {
                        tracing::warn!(request = %row.id, status, "the client's notification endpoint refused a ping");
                        if (400..500).contains(&status) && status != 429 {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(request = %row.id, error = %e, "pinging the client failed");
                    }
                }
            }
        });
    }
}
