//! Two real server processes on one PostgreSQL database (issue 13): the
//! kill switch applied through the CLI reaches the other node's
//! introspection. The bound (one second, the agent status cache) is
//! measured by bench/killswitch.py; this test allows three seconds so that
//! a loaded test machine does not fail it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::PG_URL;
use crate::private_key_jwt::client_key;

const BIN: &str = env!("CARGO_BIN_EXE_agentauth");

/// A scratch database, dropped (with force) when the guard goes.
struct ScratchDb {
    name: String,
}

impl ScratchDb {
    async fn new() -> Self {
        let name = format!(
            "aa_proc_{}",
            agentauth::crypto::random_id()
                .unwrap()
                .to_lowercase()
                .replace('-', "_")
        );
        let admin = Database::connect(PG_URL).await.unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::process::Command::new("psql")
            .args([
                PG_URL,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn cli(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "agentauth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn serve(port: u16, issuer: &str, db: &str, kek: &str) -> Child {
    Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--issuer",
            issuer,
        ])
        .args([
            "--database-url",
            db,
            "--resource",
            "https://mcp.example.com/mcp",
        ])
        .env("AGENTAUTH_KEK", kek)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_up(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} never became healthy");
}

async fn form(
    http: &reqwest::Client,
    url: &str,
    body: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Value {
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(body)
        .finish();
    let mut request = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encoded);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    serde_json::from_slice(&request.send().await.unwrap().bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_across_two_server_processes() {
    let db = ScratchDb::new().await;
    let url = db.url();
    let kek = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode(agentauth::crypto::random_bytes::<32>().unwrap())
    };
    let env = [
        ("AGENTAUTH_KEK", kek.as_str()),
        ("AGENTAUTH_PASSWORD", "correct horse battery"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let key = client_key("proc-key");
    let jwk_file = dir.path().join("agent.jwk");
    std::fs::write(&jwk_file, key.jwk.to_string()).unwrap();
    cli(&["user", "create", "alice", "--database-url", &url], &env).await;
    let agent = cli(
        &[
            "agent",
            "create",
            "--owner",
            "alice",
            "--name",
            "a",
            "--scope",
            "read",
            "--jwk",
            jwk_file.to_str().unwrap(),
            "--database-url",
            &url,
        ],
        &env,
    )
    .await;
    let rs: Value = serde_json::from_str(
        &cli(
            &[
                "client",
                "create",
                "--name",
                "rs",
                "--introspect",
                "*",
                "--json",
                "--database-url",
                &url,
            ],
            &env,
        )
        .await,
    )
    .unwrap();
    let (rs_id, rs_secret) = (
        rs["client_id"].as_str().unwrap(),
        rs["client_secret"].as_str().unwrap(),
    );

    let (port_a, port_b) = (free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{port_a}");
    let _a = serve(port_a, &issuer, &url, &kek);
    let _b = serve(port_b, &issuer, &url, &kek);
    let http = reqwest::Client::new();
    let (node_a, node_b) = (issuer.clone(), format!("http://127.0.0.1:{port_b}"));
    wait_up(&http, &node_a).await;
    wait_up(&http, &node_b).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let assertion = key.assertion(
        json!({"iss": agent, "sub": agent, "aud": issuer, "jti": "p-1",
                                          "iat": now, "exp": now + 60}),
    );
    let token = form(
        &http,
        &format!("{node_a}/token"),
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
            ("resource", "https://mcp.example.com/mcp"),
        ],
        None,
    )
    .await;
    let token = token["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{token}"))
        .to_string();
    let active = || async {
        form(
            &http,
            &format!("{node_b}/introspect"),
            &[("token", &token)],
            Some((rs_id, rs_secret)),
        )
        .await["active"]
            == true
    };
    assert!(active().await);

    cli(&["agent", "disable", &agent, "--database-url", &url], &env).await;
    let committed = Instant::now();
    while active().await {
        assert!(
            committed.elapsed() < Duration::from_secs(3),
            "node B still reports the token active {:?} after the disable",
            committed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
