//! CIBA ping-mode latency (issue 32: "latency from approval to token
//! delivered in ping mode") against a running server.
//!
//! It seeds the server's database directly (an owner, and an initial
//! access token for a confidential client), registers a ping-mode client
//! whose notification endpoint listens in this process, records the
//! owner's consent to it, and then, N times: the client asks the owner
//! (`/bc-authorize`), the owner approves on the approvals page over HTTP
//! (signed in, CSRF-checked, password), and the client, pinged, redeems
//! the request at `/token`. Measured from the approval's HTTP response:
//! to the ping's arrival, and to the token in the client's hands. Prints
//! p50, p95, p99 and max of each.
//!
//! The endpoint is plain http on loopback, which only a debug server
//! started with `--insecure-fetch-for-tests-only` calls: the numbers are
//! a debug build's.
//!
//! ```sh
//! cargo build && AGENTAUTH_KEK=$(openssl rand -base64 32) \
//!   target/debug/agentauth serve --database-url sqlite:///tmp/ping.db?mode=rwc \
//!   --insecure-fetch-for-tests-only --ciba-max-per-client 1000 &
//! AGENTAUTH_KEK=<same> cargo run --example ping_latency -- \
//!   sqlite:///tmp/ping.db?mode=rwc http://127.0.0.1:8080 [requests]
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentauth::store;
use serde_json::{Value, json};

#[path = "common/browser.rs"]
mod browser;
use browser::{form, hidden};

const PASSWORD: &str = "ping latency bench password";
const CIBA: &str = "urn:openid:params:grant-type:ciba";

/// `auth_req_id` → when its ping arrived, and the bearer token it bore.
type Pings = Arc<Mutex<HashMap<String, (Instant, String)>>>;

async fn notified(
    axum::extract::State(pings): axum::extract::State<Pings>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let now = Instant::now();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if let Ok(v) = serde_json::from_str::<Value>(&body)
        && let Some(id) = v["auth_req_id"].as_str()
    {
        pings.lock().unwrap().insert(id.to_string(), (now, bearer));
    }
    axum::http::StatusCode::NO_CONTENT
}

fn percentiles(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let at = |p: f64| {
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    println!(
        "{name}: n {}, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        v.len(),
        at(0.50),
        at(0.95),
        at(0.99),
        at(1.0)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let db_url = args.next().expect("DATABASE_URL");
    let issuer = args.next().expect("ISSUER");
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let db = store::connect(&db_url, 4, None).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;

    // The client's notification endpoint.
    let pings: Pings = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route("/cb", axum::routing::post(notified))
        .with_state(pings.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The owner, and a ping-mode client registered with an initial token.
    let owner = format!("bench-{}", agentauth::crypto::random_id()?.to_lowercase());
    let user = agentauth::accounts::create_user(&db, &owner, PASSWORD.into(), now).await?;
    let initial = agentauth::crypto::random_token()?;
    store::initial_tokens::insert(
        &db,
        agentauth::crypto::sha256(initial.as_bytes()),
        now,
        None,
        Some(1),
        None,
    )
    .await?;
    let http = reqwest::Client::new();
    let client: Value = http
        .post(format!("{issuer}/register"))
        .bearer_auth(&initial)
        .json(&json!({
            "client_name": "ping bench", "grant_types": [CIBA],
            "token_endpoint_auth_method": "client_secret_basic",
            "backchannel_token_delivery_mode": "ping",
            "backchannel_client_notification_endpoint": format!("http://127.0.0.1:{port}/cb"),
        }))
        .send()
        .await?
        .json()
        .await?;
    let (id, secret) = (
        client["client_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("registration: {client}"))?
            .to_string(),
        client["client_secret"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    // The owner consented to it before (as after a code flow).
    store::grants::save_consent(
        &db,
        store::grants::ConsentRow {
            user_id: user.id.clone(),
            client_id: id.clone(),
            scope: String::new(),
            resources: json!([]),
            granted_at: now,
        },
    )
    .await?;
    let (browser, mut jar) = browser::signed_in(&issuer, &owner, PASSWORD).await?;

    let mut to_ping = Vec::with_capacity(n);
    let mut to_token = Vec::with_capacity(n);
    for i in 0..n {
        let token = format!("bench-notification-{i}");
        let started: Value = http
            .post(format!("{issuer}/bc-authorize"))
            .basic_auth(&id, Some(&secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("login_hint", owner.as_str()),
                ("binding_message", &format!("bench {i}")),
                ("client_notification_token", &token),
            ]))
            .send()
            .await?
            .json()
            .await?;
        let auth_req_id = started["auth_req_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("bc-authorize: {started}"))?
            .to_string();
        let page = browser
            .get(format!("{issuer}/account/approvals"))
            .header("cookie", jar.header())
            .send()
            .await?;
        jar.take(&page);
        let html = page.text().await?;
        let marker = "action=\"/account/approvals/";
        let at = html
            .find(marker)
            .ok_or_else(|| anyhow::anyhow!("no pending request on the page"))?
            + marker.len();
        let request = html[at..].split('/').next().unwrap_or_default().to_string();
        let r = browser
            .post(format!("{issuer}/account/approvals/{request}/approve"))
            .header("cookie", jar.header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("csrf_token", hidden(&html, "csrf_token")?.as_str()),
                ("password", PASSWORD),
            ]))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 303, "approve: {}", r.status());
        let approved = Instant::now();
        let deadline = approved + Duration::from_secs(10);
        let pinged = loop {
            if let Some((at, bearer)) = pings.lock().unwrap().get(&auth_req_id).cloned() {
                anyhow::ensure!(bearer == format!("Bearer {token}"), "ping bore {bearer:?}");
                break at;
            }
            anyhow::ensure!(Instant::now() < deadline, "no ping for {auth_req_id}");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let answer: Value = http
            .post(format!("{issuer}/token"))
            .basic_auth(&id, Some(&secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("grant_type", CIBA), ("auth_req_id", &auth_req_id)]))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(answer["access_token"].is_string(), "token: {answer}");
        to_ping.push(pinged.saturating_duration_since(approved));
        to_token.push(approved.elapsed());
    }
    percentiles("approval → ping", to_ping);
    percentiles("approval → token", to_token);
    Ok(())
}
