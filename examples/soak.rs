//! Soak: mixed load on two server processes sharing one database, for a
//! long time, watching for leaks, errors and latency drift (issue 18,
//! item 7; `scripts/soak` starts the nodes and runs this).
//!
//! Each worker loops over, alternating nodes A and B: a dynamic
//! registration (201), a client_credentials token at one node (200) and
//! its introspection at the other (200, active), one step of its own
//! refresh chain (200), a JWKS read (200), and a wrong client secret
//! (401, the one expected error). Any other answer, or a failed request,
//! is an error.
//!
//! Every INTERVAL seconds it prints one row: requests, errors, p50 and
//! p99 over the interval, and each node's resident memory (VmRSS from
//! /proc). At the end it fails (exit 1) on any error, or when a node's
//! RSS anywhere in the second half of the run exceeds its level at the
//! half-way mark by more than TOLERANCE percent. The first half is the
//! warm-up: the bounded caches (registered clients, verified tokens,
//! rate-limit and touch records) fill for about ten minutes at full load
//! before RSS levels off.
//!
//! ```sh
//! soak DATABASE_URL NODE_A NODE_B PID_A PID_B CLIENT_ID CLIENT_SECRET \
//!      [SECONDS=1800] [INTERVAL=60] [CONCURRENCY=8] [TOLERANCE=10]
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentauth::store;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[path = "common/seed.rs"]
mod seed;
use seed::REDIRECT;

/// What one interval saw.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u64>,
    errors: Vec<String>,
}

struct Load {
    http: reqwest::Client,
    nodes: [String; 2],
    operator: (String, String),
    public_client: String,
    window: Mutex<Window>,
    requests: AtomicU64,
}

impl Load {
    /// Sends, times, and checks the status; the body when it was right.
    async fn call(
        &self,
        what: &str,
        expected: u16,
        request: reqwest::RequestBuilder,
    ) -> Option<Value> {
        let started = Instant::now();
        let result = request.send().await;
        let elapsed = started.elapsed().as_micros() as u64;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut window = self.window.lock().await;
        window.latencies_us.push(elapsed);
        match result {
            Ok(r) if r.status().as_u16() == expected => {
                drop(window);
                r.json().await.ok().or(Some(Value::Null))
            }
            Ok(r) => {
                let status = r.status();
                drop(window);
                let body = r.text().await.unwrap_or_default();
                self.window
                    .lock()
                    .await
                    .errors
                    .push(format!("{what}: {status} {body}"));
                None
            }
            Err(e) => {
                window.errors.push(format!("{what}: {e}"));
                None
            }
        }
    }

    fn form(&self, node: usize, path: &str, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.nodes[node]))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish(),
            )
    }

    /// One round of the mix; `refresh` is this worker's chain.
    async fn round(&self, n: u64, refresh: &mut String) {
        let (a, b) = ((n % 2) as usize, ((n + 1) % 2) as usize);
        self.call(
            "register",
            201,
            self.http.post(format!("{}/register", self.nodes[a])).json(
                &json!({"client_name": format!("soak {n}"),
                              "redirect_uris": [REDIRECT],
                              "token_endpoint_auth_method": "none"}),
            ),
        )
        .await;
        let (id, secret) = &self.operator;
        let token = self
            .call(
                "client_credentials",
                200,
                self.form(a, "/token", &[("grant_type", "client_credentials")])
                    .basic_auth(id, Some(secret)),
            )
            .await;
        if let Some(token) = token.as_ref().and_then(|t| t["access_token"].as_str()) {
            let answer = self
                .call(
                    "introspect",
                    200,
                    self.form(b, "/introspect", &[("token", token)])
                        .basic_auth(id, Some(secret)),
                )
                .await;
            if answer.is_some_and(|a| a["active"] != true) {
                self.window
                    .lock()
                    .await
                    .errors
                    .push("introspect: a fresh token is inactive at the other node".into());
            }
        }
        let next = self
            .call(
                "refresh_token",
                200,
                self.form(
                    b,
                    "/token",
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh),
                        ("client_id", &self.public_client),
                    ],
                ),
            )
            .await;
        if let Some(rt) = next.as_ref().and_then(|r| r["refresh_token"].as_str()) {
            *refresh = rt.to_string();
        }
        self.call(
            "jwks",
            200,
            self.http.get(format!("{}/jwks.json", self.nodes[a])),
        )
        .await;
        self.call(
            "wrong secret",
            401,
            self.form(b, "/token", &[("grant_type", "client_credentials")])
                .basic_auth(id, Some("not the secret")),
        )
        .await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 7 {
        anyhow::bail!(
            "usage: soak DATABASE_URL NODE_A NODE_B PID_A PID_B CLIENT_ID CLIENT_SECRET \
             [SECONDS] [INTERVAL] [CONCURRENCY] [TOLERANCE]"
        );
    }
    let number = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (seconds, interval, concurrency, tolerance) = (
        number(7, 1800)?,
        number(8, 60)?,
        number(9, 8)?,
        number(10, 10)?,
    );
    let pids = [args[3].parse::<u32>()?, args[4].parse::<u32>()?];

    // One code per worker, redeemed once: the start of its refresh chain.
    let db = store::connect(&args[0], 2, None).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let seeded = seed::code_flow(&db, concurrency as usize, now).await?;
    db.close().await?;

    let load = Arc::new(Load {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        nodes: [args[1].clone(), args[2].clone()],
        operator: (args[5].clone(), args[6].clone()),
        public_client: seeded.client_id.clone(),
        window: Mutex::default(),
        requests: AtomicU64::new(0),
    });
    let mut chains = Vec::new();
    for code in &seeded.codes {
        let answer = load
            .call(
                "authorization_code",
                200,
                load.form(
                    0,
                    "/token",
                    &[
                        ("grant_type", "authorization_code"),
                        ("client_id", &seeded.client_id),
                        ("code", code),
                        ("code_verifier", &seeded.verifier),
                        ("redirect_uri", REDIRECT),
                    ],
                ),
            )
            .await
            .ok_or_else(|| anyhow::anyhow!("the seeded code was refused"))?;
        chains.push(
            answer["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = chains
        .into_iter()
        .enumerate()
        .map(|(w, mut refresh)| {
            let (load, stop) = (load.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = w as u64;
                while !stop.load(Ordering::Relaxed) {
                    load.round(n, &mut refresh).await;
                    n += 1;
                }
            })
        })
        .collect();

    println!("| minute | requests | errors | p50 ms | p99 ms | RSS A MiB | RSS B MiB |");
    println!("|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let mut rss: Vec<[u64; 2]> = Vec::new();
    let mut errors = Vec::new();
    let mut total = 0u64;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(interval),
        Duration::from_secs(interval),
    );
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let window = std::mem::take(&mut *load.window.lock().await);
        let requests = load.requests.swap(0, Ordering::Relaxed);
        total += requests;
        let mut latencies = window.latencies_us;
        latencies.sort_unstable();
        let sample = [rss_kib(pids[0]), rss_kib(pids[1])];
        rss.push(sample);
        println!(
            "| {:.1} | {requests} | {} | {:.2} | {:.2} | {:.1} | {:.1} |",
            started.elapsed().as_secs_f64() / 60.0,
            window.errors.len(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            sample[0] as f64 / 1024.0,
            sample[1] as f64 / 1024.0,
        );
        errors.extend(window.errors);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }

    let mut failed = false;
    if !errors.is_empty() {
        failed = true;
        eprintln!("{} unexpected answers; the first ones:", errors.len());
        for e in errors.iter().take(10) {
            eprintln!("  {e}");
        }
    }
    // The first half is the warm-up; growth is judged on the second.
    if rss.len() >= 3 {
        let half = rss.len() / 2;
        for node in 0..2 {
            let baseline = rss[half - 1][node].max(1);
            let late = rss[half..].iter().map(|s| s[node]).max().unwrap_or(0);
            let growth = (late as f64 / baseline as f64 - 1.0) * 100.0;
            println!(
                "node {}: RSS {:.1} MiB at half-time, at most {:.1} MiB in the second half ({growth:+.1} %)",
                ["A", "B"][node],
                baseline as f64 / 1024.0,
                late as f64 / 1024.0,
            );
            if growth > tolerance as f64 {
                failed = true;
                eprintln!(
                    "node {}: RSS grew {growth:.1} %, over {tolerance} %",
                    ["A", "B"][node]
                );
            }
        }
    }
    println!("{total} requests, {} unexpected", errors.len());
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
