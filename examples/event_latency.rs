//! Security-event delivery latency (issue 31 item 5: "event delivery p99
//! ≤ 1 s to a live receiver") against a running server.
//!
//! It seeds the server's database directly (an owner, N agents, and a
//! receiver listening in this process), then kills the agents one after
//! another the way an owner does, through the console over HTTP (sign in,
//! confirmation page, CSRF-checked POST), and measures, for each kill,
//! the time from the kill's HTTP response to the receiver getting the
//! agent's session-revoked SET. Prints p50, p99 and max.
//!
//! The receiver listens on plain http on loopback, which only a server
//! started with `--insecure-fetch-for-tests-only` pushes to, and only a
//! debug build accepts that switch: the numbers are a debug build's.
//!
//! ```sh
//! cargo build && AGENTAUTH_KEK=$(openssl rand -base64 32) \
//!   target/debug/agentauth serve --database-url sqlite:///tmp/ev.db \
//!   --insecure-fetch-for-tests-only &
//! AGENTAUTH_KEK=<same> cargo run --example event_latency -- \
//!   sqlite:///tmp/ev.db http://127.0.0.1:8080 [agents]
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentauth::crypto::Kek;
use agentauth::events::receivers::{self, NewReceiverRequest};
use agentauth::store;
use axum::extract::State;

const PASSWORD: &str = "event latency bench password";

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(State(arrivals): State<Arrivals>, body: String) -> axum::http::StatusCode {
    let now = Instant::now();
    // The subject only: this process trusts its own server here; the
    // tests and examples/site.mjs verify SETs properly.
    let payload = body.split('.').nth(1).unwrap_or_default();
    use base64::Engine as _;
    if let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)
        && let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && let Some(sub) = claims["sub_id"]["sub"].as_str()
    {
        arrivals
            .lock()
            .unwrap()
            .entry(sub.to_string())
            .or_insert(now);
    }
    axum::http::StatusCode::ACCEPTED
}

#[path = "common/browser.rs"]
mod browser;
use browser::{form, hidden};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let db_url = args.next().expect("DATABASE_URL");
    let issuer = args.next().expect("ISSUER");
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let kek = Kek::from_base64(&std::env::var("AGENTAUTH_KEK").expect("AGENTAUTH_KEK"))?;
    let db = store::connect(&db_url, 4, None).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;

    // The receiver.
    let arrivals: Arrivals = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route("/events", axum::routing::post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    receivers::add(
        &db,
        &receivers::seal_key(&kek)?,
        true,
        NewReceiverRequest {
            endpoint_url: format!("http://127.0.0.1:{port}/events"),
            audience: "https://bench.example/".into(),
            authorization: Some("Bearer bench".into()),
        },
        now,
        "bench",
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    // An owner and their agents.
    let owner = format!("bench-{}", agentauth::crypto::random_id()?.to_lowercase());
    let user = agentauth::accounts::create_user(&db, &owner, PASSWORD.into(), now).await?;
    let grants = agentauth::grants::Registry::standard();
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        use aws_lc_rs::signature::KeyPair as _;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::generate()?;
        let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "kid": format!("k{i}"),
            "x": agentauth::crypto::b64url(pair.public_key().as_ref()) });
        let (row, _) = agentauth::agents::create(
            &db,
            &grants,
            agentauth::agents::NewAgent {
                name: format!("bench agent {i}"),
                owner_id: user.id.clone(),
                scope: Default::default(),
                resources: Vec::new(),
                keys: jsonwebtoken::jwk::JwkSet {
                    keys: vec![
                        agentauth::agents::check_key(&jwk).map_err(|e| anyhow::anyhow!("{e}"))?,
                    ],
                },
            },
            now,
            "bench",
        )
        .await?;
        agents.push(row.id);
    }
    eprintln!("seeded {n} agents and a receiver on port {port}");

    // Sign in as the owner.
    let (http, mut jar) = browser::signed_in(&issuer, &owner, PASSWORD).await?;

    // Kill them one by one; the clock starts at each kill's response.
    let mut killed_at = HashMap::new();
    for id in &agents {
        let confirm = http
            .get(format!(
                "{issuer}/account/agents/{id}/confirm?action=disable"
            ))
            .header("cookie", jar.header())
            .send()
            .await?;
        jar.take(&confirm);
        let csrf = hidden(&confirm.text().await?, "csrf_token")?;
        let r = http
            .post(format!("{issuer}/account/agents/{id}/disable"))
            .header("cookie", jar.header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("csrf_token", csrf.as_str())]))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 303, "kill: {}", r.status());
        killed_at.insert(id.clone(), Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = arrivals.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = agents
        .iter()
        .filter_map(|id| {
            let got = arrivals.get(id)?;
            // Arriving before the kill's response was read counts as 0.
            Some(got.saturating_duration_since(killed_at[id]))
        })
        .collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "kills: {n}, SETs received: {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}
