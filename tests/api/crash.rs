//! Issue 18, item 3: `kill -9` under mixed load, many times, on SQLite.
//!
//! Each round starts the real server on the same file, drives
//! registrations, client_credentials tokens, a refresh chain and full
//! code flows (a password login each) at it from four workers, and
//! SIGKILLs it at a random moment. After every kill a consistency check
//! reads the file directly and then asks the restarted server:
//! - every registration, code and refresh token acknowledged to a client
//!   is stored;
//! - no refresh family has more than one live token;
//! - the chain's newest acknowledged refresh token still refreshes (a
//!   rotation that committed unacknowledged is retried by its grace
//!   window, never lost);
//! - no code is redeemed twice, across all rounds;
//! - access tokens acknowledged before a kill are active after it (the
//!   signing keys were durable).
//!
//! `AGENTAUTH_CRASH_ROUNDS` sets the rounds (default 6; `scripts/crash`
//! runs 50 against a release build and reports start-up times).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, FromQueryResult};

use crate::faults::not_stored;
use serde_json::{Value, json};

use crate::processes::{
    MANY_REGISTRATIONS, cli, cli_client, cli_env, code_at, form, free_port, random_kek, serve,
    try_code_at,
};

const REDIRECT: &str = "http://127.0.0.1:9/cb";

/// What clients were told, across all rounds.
#[derive(Default)]
struct Acked {
    clients: Vec<String>,
    access_tokens: Vec<String>,
    /// The refresh chain's newest acknowledged token.
    refresh: String,
    /// Every refresh token acknowledged.
    refresh_tokens: Vec<String>,
    /// code -> (verifier, successful redemptions seen).
    codes: HashMap<String, (String, u32)>,
}

/// Seconds from spawn to a 200 at `/readyz`.
async fn start(port: u16, base: &str, url: &str, kek: &str) -> (tokio::process::Child, Duration) {
    let started = Instant::now();
    let child = serve(port, base, url, kek, MANY_REGISTRATIONS);
    let http = reqwest::Client::new();
    loop {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return (child, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn random_below(n: u64) -> u64 {
    u64::from_le_bytes(agentauth::crypto::random_bytes::<8>().unwrap()) % n
}

/// The token request that redeems `code` for the public client.
fn redemption<'a>(code: &'a str, verifier: &'a str, client_id: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id),
    ]
}

/// `POST /token`: its status and JSON, or None when the connection was
/// lost (the kill).
async fn post_token(
    http: &reqwest::Client,
    base: &str,
    pairs: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Option<(reqwest::StatusCode, Value)> {
    let mut request = http
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(crate::helpers::form(pairs));
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let r = request.send().await.ok()?;
    let status = r.status();
    Some((status, r.json().await.ok()?))
}

#[derive(FromQueryResult)]
struct Live {
    family_id: String,
    live: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_mixed_load_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("AGENTAUTH_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("agentauth.db").display()
    );
    let kek = random_kek();
    let env = cli_env(&kek);
    cli(&["user", "create", "alice", "--database-url", &url], &env).await;
    let (rs_id, rs_secret) = cli_client(&url, &env, &["--name", "rs", "--introspect", "*"]).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let (mut server, first_start) = start(port, &base, &url, &kek).await;
    let mut startups = vec![first_start];
    let worker = cli_client(&url, &env, &["--name", "worker"]).await;
    let app: Value = http
        .post(format!("{base}/register"))
        .json(&json!({"client_name": "app", "redirect_uris": [REDIRECT],
                      "grant_types": ["authorization_code", "refresh_token"],
                      "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app_id = app["client_id"].as_str().unwrap().to_string();
    let redeem = |code: String, verifier: String| {
        let (http, base, app_id) = (http.clone(), base.clone(), app_id.clone());
        async move {
            form(
                &http,
                &format!("{base}/token"),
                &redemption(&code, &verifier, &app_id),
                None,
            )
            .await
        }
    };
    let (code, verifier) = code_at(&base, &app_id, REDIRECT).await;
    let first = redeem(code, verifier).await;
    let acked = Arc::new(Mutex::new(Acked {
        refresh: first["refresh_token"].as_str().unwrap().to_string(),
        ..Acked::default()
    }));

    for round in 0..rounds {
        // Mixed load until the kill; a worker stops at its first error.
        let load = |kind: u8| {
            let (http, base, worker, app_id, acked) = (
                reqwest::Client::new(),
                base.clone(),
                worker.clone(),
                app_id.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                for n in 0.. {
                    match kind {
                        0 => {
                            let Ok(r) = http
                                .post(format!("{base}/register"))
                                .json(&json!({"client_name": format!("r{round}-{n}"),
                                              "grant_types": ["client_credentials"]}))
                                .send()
                                .await
                            else {
                                return;
                            };
                            let status = r.status();
                            let Ok(body) = r.json::<Value>().await else {
                                return;
                            };
                            let Some(id) = body["client_id"].as_str() else {
                                panic!("registration answered {status}: {body}");
                            };
                            acked.lock().unwrap().clients.push(id.to_string());
                        }
                        1 => {
                            let Some((status, body)) = post_token(
                                &http,
                                &base,
                                &[("grant_type", "client_credentials")],
                                Some((&worker.0, &worker.1)),
                            )
                            .await
                            else {
                                return;
                            };
                            let Some(t) = body["access_token"].as_str() else {
                                panic!("client_credentials answered {status}: {body}");
                            };
                            let mut acked = acked.lock().unwrap();
                            if n % 8 == 0 {
                                acked.access_tokens.push(t.to_string());
                            }
                        }
                        2 => {
                            let parent = acked.lock().unwrap().refresh.clone();
                            let Some((status, body)) = post_token(
                                &http,
                                &base,
                                &[
                                    ("grant_type", "refresh_token"),
                                    ("refresh_token", &parent),
                                    ("client_id", &app_id),
                                ],
                                None,
                            )
                            .await
                            else {
                                return;
                            };
                            let Some(t) = body["refresh_token"].as_str() else {
                                panic!("refresh answered {status}: {body}");
                            };
                            let mut acked = acked.lock().unwrap();
                            acked.refresh = t.to_string();
                            acked.refresh_tokens.push(t.to_string());
                        }
                        _ => {
                            // A password login and consent, then the code
                            // (acknowledged by the redirect) and its redemption.
                            let Ok((code, verifier)) = try_code_at(&base, &app_id, REDIRECT).await
                            else {
                                return;
                            };
                            acked
                                .lock()
                                .unwrap()
                                .codes
                                .insert(code.clone(), (verifier.clone(), 0));
                            let Some((_, body)) = post_token(
                                &http,
                                &base,
                                &redemption(&code, &verifier, &app_id),
                                None,
                            )
                            .await
                            else {
                                return;
                            };
                            if body["access_token"].is_string()
                                && let Some(entry) = acked.lock().unwrap().codes.get_mut(&code)
                            {
                                entry.1 += 1;
                            }
                        }
                    }
                }
            })
        };
        let workers: Vec<_> = (0..4).map(load).collect();
        tokio::time::sleep(Duration::from_millis(300 + random_below(1200))).await;
        server.start_kill().unwrap();
        server.wait().await.unwrap();
        for w in workers {
            // A worker panics only on a wrong answer (not a lost connection).
            w.await.unwrap();
        }

        // The file as the kill left it.
        {
            let db = Database::connect(&url).await.unwrap();
            let (clients, refresh_tokens, codes) = {
                let acked = acked.lock().unwrap();
                (
                    acked.clients.clone(),
                    acked.refresh_tokens.clone(),
                    acked.codes.keys().cloned().collect::<Vec<_>>(),
                )
            };
            let lost = not_stored::<entity::client::Entity, _>(&db, &clients).await;
            assert!(lost.is_empty(), "round {round}: clients lost: {lost:?}");
            let hashes = |values: &[String]| -> Vec<Vec<u8>> {
                values
                    .iter()
                    .map(|v| agentauth::crypto::sha256(v.as_bytes()).to_vec())
                    .collect()
            };
            let lost =
                not_stored::<entity::refresh_token::Entity, _>(&db, &hashes(&refresh_tokens)).await;
            assert!(
                lost.is_empty(),
                "round {round}: {} acknowledged refresh tokens lost",
                lost.len()
            );
            let lost =
                not_stored::<entity::authorization_code::Entity, _>(&db, &hashes(&codes)).await;
            assert!(
                lost.is_empty(),
                "round {round}: {} acknowledged codes lost",
                lost.len()
            );
            let doubled = Live::find_by_statement(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT family_id, COUNT(*) AS live FROM refresh_tokens \
                 WHERE rotated_at IS NULL AND revoked_at IS NULL \
                 GROUP BY family_id HAVING COUNT(*) > 1",
            ))
            .all(&db)
            .await
            .unwrap();
            assert!(
                doubled.is_empty(),
                "round {round}: families with more than one live token: {:?}",
                doubled
                    .iter()
                    .map(|l| (&l.family_id, l.live))
                    .collect::<Vec<_>>()
            );
            db.close().await.unwrap();
        }

        let (restarted, took) = start(port, &base, &url, &kek).await;
        server = restarted;
        startups.push(took);

        // The chain goes on from the newest acknowledged token.
        let parent = acked.lock().unwrap().refresh.clone();
        let next = form(
            &http,
            &format!("{base}/token"),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &parent),
                ("client_id", &app_id),
            ],
            None,
        )
        .await;
        let child = next["refresh_token"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("round {round}: the acknowledged refresh token failed: {next}")
            })
            .to_string();
        {
            let mut acked = acked.lock().unwrap();
            acked.refresh = child.clone();
            acked.refresh_tokens.push(child);
        }

        // Acknowledged access tokens are still good.
        let tokens = acked.lock().unwrap().access_tokens.clone();
        for token in tokens.iter().rev().take(5) {
            let answer = form(
                &http,
                &format!("{base}/introspect"),
                &[("token", token)],
                Some((&rs_id, &rs_secret)),
            )
            .await;
            assert_eq!(answer["active"], true, "round {round}: {answer}");
        }

        // Every code ever issued: redeemed at most once, over all rounds.
        let codes: Vec<(String, String)> = acked
            .lock()
            .unwrap()
            .codes
            .iter()
            .map(|(c, (v, _))| (c.clone(), v.clone()))
            .collect();
        for (code, verifier) in codes {
            let answer = redeem(code.clone(), verifier).await;
            let mut acked = acked.lock().unwrap();
            let entry = acked.codes.get_mut(&code).unwrap();
            if answer["access_token"].is_string() {
                entry.1 += 1;
            } else {
                assert_eq!(answer["error"], "invalid_grant", "round {round}: {answer}");
            }
            assert!(entry.1 <= 1, "round {round}: a code was redeemed twice");
        }
    }
    server.start_kill().unwrap();

    let acked = acked.lock().unwrap();
    assert!(
        !acked.clients.is_empty()
            && !acked.access_tokens.is_empty()
            && acked.refresh_tokens.len() > rounds
            && !acked.codes.is_empty(),
        "the load did not exercise every kind of write"
    );
    startups.sort();
    eprintln!(
        "crash: {rounds} kills survived; acknowledged: {} registrations, {} access tokens checked, \
         {} refresh tokens, {} codes; \
         start-up to ready: median {:?}, max {:?}",
        acked.clients.len(),
        acked.access_tokens.len(),
        acked.refresh_tokens.len(),
        acked.codes.len(),
        startups[startups.len() / 2],
        startups[startups.len() - 1],
    );
    if let Ok(limit) = std::env::var("AGENTAUTH_STARTUP_LIMIT_MS") {
        let limit = Duration::from_millis(limit.parse().unwrap());
        assert!(
            startups[startups.len() - 1] <= limit,
            "start-up to ready took {:?}, over {limit:?}",
            startups[startups.len() - 1]
        );
    }
}
