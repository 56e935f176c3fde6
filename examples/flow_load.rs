//! Load for the code flow's token endpoint: authorization-code exchange
//! and refresh-token rotation per second against a running server.
//!
//! It seeds the server's database directly (a public client, a user, and
//! enough fresh codes), then drives `POST /token` with N concurrent
//! workers for a fixed time, and prints requests/s, p50 and p99.
//!
//! ```sh
//! cargo run --release --example flow_load -- DATABASE_URL ISSUER [seconds] [concurrency]
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentauth::store;
use tokio::sync::Mutex;

#[path = "common/seed.rs"]
mod seed;
use seed::REDIRECT;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let db_url = args.next().expect("DATABASE_URL");
    let issuer = args.next().expect("ISSUER");
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(8);
    let concurrency: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16);
    let db = store::connect(&db_url, 4, None).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;

    let count = (seconds as usize) * 4000;
    let seed::Seeded {
        client_id,
        verifier,
        codes,
    } = seed::code_flow(&db, count, now).await?;
    eprintln!("seeded {count} codes");

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let token_url = format!("{issuer}/token");
    let codes = Arc::new(Mutex::new(codes));
    let refresh_tokens = Arc::new(Mutex::new(Vec::new()));

    // Phase 1: code exchange.
    let shared = (
        http.clone(),
        token_url.clone(),
        codes.clone(),
        refresh_tokens.clone(),
        client_id.clone(),
        verifier.clone(),
    );
    let (rps, p50, p99) = run(concurrency, seconds, move |_| {
        let (http, url, codes, rts, client_id, verifier) = shared.clone();
        async move {
            let code = codes.lock().await.pop()?;
            let body = form(&[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &code),
                ("code_verifier", &verifier),
                ("redirect_uri", REDIRECT),
            ]);
            let r = post(&http, &url, body).await?;
            let rt = r["refresh_token"].as_str()?.to_string();
            rts.lock().await.push(rt);
            Some(())
        }
    })
    .await;
    println!("RESULT scenario=authorization_code rps={rps:.1} p50_ms={p50:.2} p99_ms={p99:.2}");

    // Phase 2: refresh rotation; each worker follows its own chain.
    let chains: Vec<Arc<Mutex<String>>> = {
        let mut rts = refresh_tokens.lock().await;
        (0..concurrency)
            .filter_map(|_| rts.pop())
            .map(|rt| Arc::new(Mutex::new(rt)))
            .collect()
    };
    let chains = Arc::new(chains);
    let shared = (
        http.clone(),
        token_url.clone(),
        chains.clone(),
        client_id.clone(),
    );
    let (rps, p50, p99) = run(concurrency, seconds, move |worker| {
        let (http, url, chains, client_id) = shared.clone();
        async move {
            let chain = chains.get(worker)?.clone();
            let mut rt = chain.lock().await;
            let body = form(&[
                ("grant_type", "refresh_token"),
                ("client_id", &client_id),
                ("refresh_token", &rt),
            ]);
            let r = post(&http, &url, body).await?;
            *rt = r["refresh_token"].as_str()?.to_string();
            Some(())
        }
    })
    .await;
    println!("RESULT scenario=refresh_token rps={rps:.1} p50_ms={p50:.2} p99_ms={p99:.2}");
    Ok(())
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn post(http: &reqwest::Client, url: &str, body: String) -> Option<serde_json::Value> {
    let r = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        eprintln!("non-2xx: {}", r.status());
        return None;
    }
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

/// Runs `step` in `concurrency` workers for `seconds`; returns (rps, p50 ms, p99 ms)
/// over successful steps.
async fn run<F, Fut>(concurrency: usize, seconds: u64, step: F) -> (f64, f64, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = Option<()>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in 0..concurrency {
        let step = step.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                if step(worker).await.is_none() {
                    break;
                }
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    (all.len() as f64 / elapsed, pct(0.5), pct(0.99))
}
