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
pub(crate) struct ScratchDb {
    pub(crate) name: String,
}

impl ScratchDb {
    pub(crate) async fn new() -> Self {
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

    pub(crate) fn url(&self) -> String {
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

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) async fn cli(args: &[&str], env: &[(&str, &str)]) -> String {
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

pub(crate) fn serve(port: u16, issuer: &str, db: &str, kek: &str, extra: &[&str]) -> Child {
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
        .args(extra)
        .env("AGENTAUTH_KEK", kek)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

pub(crate) async fn wait_up(http: &reqwest::Client, base: &str) {
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

pub(crate) async fn form(
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

/// A scratch database, its URL, and a fresh KEK (base64).
pub(crate) async fn scratch() -> (ScratchDb, String, String) {
    let db = ScratchDb::new().await;
    let url = db.url();
    (db, url, random_kek())
}

/// A fresh KEK, base64.
pub(crate) fn random_kek() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(agentauth::crypto::random_bytes::<32>().unwrap())
}

/// Serve flags for a node that a test's load registers clients at.
pub(crate) const MANY_REGISTRATIONS: &[&str] = &["--registration-rate-per-minute", "100000"];

/// What the CLI needs beside its flags.
pub(crate) fn cli_env(kek: &str) -> [(&str, &str); 2] {
    [
        ("AGENTAUTH_KEK", kek),
        ("AGENTAUTH_PASSWORD", "correct horse battery"),
    ]
}

/// Two server processes on one database, with one issuer (node A's
/// address), both answering.
struct TwoNodes {
    issuer: String,
    node_a: String,
    node_b: String,
    http: reqwest::Client,
    _processes: (Child, Child),
}

async fn two_nodes(url: &str, kek: &str) -> TwoNodes {
    two_nodes_with(url, kek, &[]).await
}

/// [`two_nodes`], both started with `extra` flags.
async fn two_nodes_with(url: &str, kek: &str, extra: &[&str]) -> TwoNodes {
    let (port_a, port_b) = (free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{port_a}");
    let a = serve(port_a, &issuer, url, kek, extra);
    let b = serve(port_b, &issuer, url, kek, extra);
    let http = reqwest::Client::new();
    let (node_a, node_b) = (issuer.clone(), format!("http://127.0.0.1:{port_b}"));
    wait_up(&http, &node_a).await;
    wait_up(&http, &node_b).await;
    TwoNodes {
        issuer,
        node_a,
        node_b,
        http,
        _processes: (a, b),
    }
}

/// Seconds since the epoch, by the real clock (the servers' clock).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `agentauth client create … --json` with `args`: (client_id, secret).
pub(crate) async fn cli_client(url: &str, env: &[(&str, &str)], args: &[&str]) -> (String, String) {
    let mut all = vec!["client", "create"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--database-url", url]);
    let made: Value = serde_json::from_str(&cli(&all, env).await).unwrap();
    (
        made["client_id"].as_str().unwrap().to_string(),
        made["client_secret"].as_str().unwrap().to_string(),
    )
}

/// Creates user alice and an agent of hers with `jwk` and scope `read`,
/// through the CLI; returns the agent's id.
async fn alice_agent(
    url: &str,
    env: &[(&str, &str)],
    dir: &std::path::Path,
    jwk: &Value,
) -> String {
    let jwk_file = dir.join("agent.jwk");
    std::fs::write(&jwk_file, jwk.to_string()).unwrap();
    cli(&["user", "create", "alice", "--database-url", url], env).await;
    cli(
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
            url,
        ],
        env,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_across_two_server_processes() {
    let (_db, url, kek) = scratch().await;
    let env = cli_env(&kek);
    let dir = tempfile::tempdir().unwrap();
    let key = client_key("proc-key");
    let agent = alice_agent(&url, &env, dir.path(), &key.jwk).await;
    let (rs_id, rs_secret) = cli_client(&url, &env, &["--name", "rs", "--introspect", "*"]).await;

    let TwoNodes {
        issuer,
        node_a,
        node_b,
        http,
        _processes,
    } = two_nodes(&url, &kek).await;

    let now = unix_now();
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
            Some((&rs_id, &rs_secret)),
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

/// Issue 15: 64 approvals of one login request, half to each of two server
/// processes on one PostgreSQL, race: exactly one wins; the site's SSE
/// stream on node B hears it (NOTIFY across processes) and gets the
/// passport, once: a poll at node A afterwards is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_approval_wins_across_two_server_processes() {
    let (_db, url, kek) = scratch().await;
    let env = cli_env(&kek);
    let dir = tempfile::tempdir().unwrap();
    let key = client_key("proc-key");
    let proof_key = crate::dpop::ProofKey::new();
    let (key_file, proof_file) = (dir.path().join("a.jwk"), dir.path().join("p.jwk"));
    std::fs::write(&key_file, key.jwk.to_string()).unwrap();
    std::fs::write(&proof_file, proof_key.jwk.to_string()).unwrap();
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
            key_file.to_str().unwrap(),
            "--jwk",
            proof_file.to_str().unwrap(),
            "--database-url",
            &url,
        ],
        &env,
    )
    .await;
    let (site_id, site_secret) = cli_client(
        &url,
        &env,
        &[
            "--name",
            "site",
            "--grant-type",
            "urn:agentauth:params:grant-type:pow-login",
        ],
    )
    .await;
    let TwoNodes {
        issuer,
        node_a,
        node_b,
        http,
        _processes,
    } = two_nodes(&url, &kek).await;
    let now = unix_now();

    // The agent's passport, bound to its proof key.
    let assertion = key.assertion(json!({"iss": agent, "sub": agent, "aud": issuer,
                                         "jti": "p-1", "iat": now, "exp": now + 60}));
    let proof = proof_key.sign(
        &proof_key.header(),
        &proof_key.claims("POST", &format!("{issuer}/token"), now),
    );
    let passport = http
        .post(format!("{node_a}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("dpop", proof)
        .body(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "urn:agentauth:params:grant-type:passport")
                .append_pair(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                )
                .append_pair("client_assertion", &assertion)
                .finish(),
        )
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let passport = passport["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{passport}"))
        .to_string();
    let signed = |method: &str, path: &str| {
        let mut claims = proof_key.claims(method, &format!("{issuer}{path}"), now);
        claims["ath"] = agentauth_resource::dpop::ath(&passport).into();
        proof_key.sign(&proof_key.header(), &claims)
    };

    let created = form(
        &http,
        &format!("{node_a}/login-requests"),
        &[],
        Some((&site_id, &site_secret)),
    )
    .await;
    let id = created["login_request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();
    let path = format!("/login-requests/{id}");
    let c: Value = http
        .get(format!("{node_b}{path}"))
        .header("authorization", format!("DPoP {passport}"))
        .header("dpop", signed("GET", &path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let challenge = c["challenge"]
        .as_str()
        .unwrap_or_else(|| panic!("{c}"))
        .to_string();
    let nonce =
        agentauth::agents::login::solve(&challenge, c["difficulty"].as_u64().unwrap() as u32);
    // The site listens on node B; every approval goes through node A or
    // B, and the winner's announcement must reach B's stream by NOTIFY
    // (B's own re-read is a minute away).
    let mut events = http
        .get(format!("{node_b}{path}/events"))
        .basic_auth(&site_id, Some(&site_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("challenge", &challenge)
        .append_pair("nonce", &nonce)
        .finish();
    let approve = format!("{path}/approve");
    let racers = (0..64).map(|i| {
        let node = if i % 2 == 0 { &node_a } else { &node_b };
        http.post(format!("{node}{approve}"))
            .header("authorization", format!("DPoP {passport}"))
            .header("dpop", signed("POST", &approve))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );

    // Node A approved or node B did: either way B's listener hears it
    // within a second or two, and carries the passport.
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        let mut text = String::new();
        while let Some(chunk) = events.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: outcome") && text.contains("\n\n") {
                break;
            }
        }
        text
    })
    .await
    .expect("the SSE listener on node B never heard the approval");
    assert!(heard.contains("\"status\":\"approved\""), "{heard}");
    assert!(heard.contains("\"passport\""), "{heard}");

    // The passport went to the stream: polling node A now is refused.
    let again = form(
        &http,
        &format!("{node_a}/token"),
        &[
            ("grant_type", "urn:agentauth:params:grant-type:pow-login"),
            ("login_request_id", &id),
        ],
        Some((&site_id, &site_secret)),
    )
    .await;
    assert_eq!(again["error"], "invalid_grant", "{again}");
}

/// A TLS server on loopback that requires a client certificate chaining
/// to `bundle_pem` (what a service trusting agentauth's bridge CA runs):
/// returns its port; each connection's handshake outcome is sent back.
async fn mtls_server(
    bundle_pem: &str,
) -> (
    u16,
    rustls::pki_types::CertificateDer<'static>,
    tokio::sync::mpsc::UnboundedReceiver<Result<(), String>>,
) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for der in crate::bridge::chain(bundle_pem) {
        roots.add(der.into()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&server_key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let outcome = acceptor
                .accept(tcp)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = tx.send(outcome);
        }
    });
    (port, server_cert.der().clone(), rx)
}

/// Connects to the mTLS server with `chain` and the Ed25519 `key`.
async fn mtls_connect(
    port: u16,
    server_cert: &rustls::pki_types::CertificateDer<'static>,
    chain: Vec<Vec<u8>>,
    key: &rcgen::KeyPair,
) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::AsyncReadExt;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        chain.into_iter().map(Into::into).collect(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // TLS 1.3: the server judges the client certificate after the client
    // finishes; reading shows the outcome (an alert, or the server's close).
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let mut buf = [0u8; 1];
        let _ = tls.read(&mut buf).await;
    }
}

/// Issue 16 end to end on real processes: two server processes on one
/// PostgreSQL issue bridge certificates under the same epoch CA; `openssl
/// verify` accepts a fresh one against the served bundle, refuses it past
/// its expiry (`-attime`) and after `agentauth ca rotate --drop-previous`;
/// a rustls server trusting the bundle accepts the certificate for client
/// authentication and refuses one from a foreign CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_certificates_across_two_nodes_openssl_and_rustls() {
    use crate::bridge::{BRIDGE, EdKey, chain};
    let (_db, url, kek) = scratch().await;
    let env = cli_env(&kek);
    let dir = tempfile::tempdir().unwrap();
    let auth_key = client_key("proc-key");
    let agent = alice_agent(&url, &env, dir.path(), &auth_key.jwk).await;
    let nodes = two_nodes(&url, &kek).await;
    let http = &nodes.http;
    let now = unix_now;
    let key = EdKey::new();
    let certify = |node: String| {
        let (issuer, agent, key, auth_key) = (&nodes.issuer, &agent, &key, &auth_key);
        async move {
            let nonce: Value = serde_json::from_slice(
                &http
                    .post(format!("{node}/bridge-certs/nonce"))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap(),
            )
            .unwrap();
            let csr = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                key.csr(nonce["c_nonce"].as_str()),
            );
            let assertion = auth_key.assertion(json!({
                "iss": agent, "sub": agent, "aud": issuer,
                "jti": agentauth::crypto::random_id().unwrap(),
                "iat": now(), "exp": now() + 60 }));
            let body = form(
                http,
                &format!("{node}/token"),
                &[
                    ("grant_type", BRIDGE),
                    ("csr", &csr),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ],
                None,
            )
            .await;
            body["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{body}"))
                .to_string()
        }
    };
    let from_a = certify(nodes.node_a.clone()).await;
    let from_b = certify(nodes.node_b.clone()).await;
    let (chain_a, chain_b) = (chain(&from_a), chain(&from_b));
    assert_eq!(chain_a[1], chain_b[1], "one epoch CA across both nodes");
    let bundle = http
        .get(format!("{}/.well-known/ca-bundle.pem", nodes.node_b))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(chain(&bundle), [chain_a[1].clone()]);

    // openssl: good now, expired in six minutes.
    let leaf_pem = from_a
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    let leaf = dir.path().join("leaf.pem");
    let ca_file = dir.path().join("bundle.pem");
    std::fs::write(&leaf, leaf_pem).unwrap();
    std::fs::write(&ca_file, &bundle).unwrap();
    let verify = |at: Option<i64>| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["verify", "-purpose", "sslclient", "-CAfile"])
            .arg(&ca_file);
        if let Some(t) = at {
            cmd.args(["-attime", &t.to_string()]);
        }
        let out = cmd.arg(&leaf).output().expect("openssl is installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (good, said) = verify(None);
    assert!(good, "openssl verify: {said}");
    let (good, said) = verify(Some(now() + 301));
    assert!(!good && said.contains("expired"), "openssl verify: {said}");

    // rustls: the bridge certificate passes client authentication; one
    // from a CA of our own making does not.
    let (port, server_cert, mut outcomes) = mtls_server(&bundle).await;
    mtls_connect(port, &server_cert, chain_a.clone(), &key.pair).await;
    let outcome = outcomes.recv().await.unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    let rogue_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut rogue_params = rcgen::CertificateParams::default();
    rogue_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let rogue_ca = rcgen::CertifiedIssuer::self_signed(rogue_params, rogue_key).unwrap();
    let mut leaf_params =
        rcgen::CertificateParams::new(vec![format!("{}/agents/{agent}", nodes.issuer)]).unwrap();
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let forged = leaf_params.signed_by(&key.pair, &rogue_ca).unwrap();
    mtls_connect(
        port,
        &server_cert,
        vec![forged.der().to_vec(), rogue_ca.der().to_vec()],
        &key.pair,
    )
    .await;
    let outcome = outcomes.recv().await.unwrap();
    // Refused for its issuer, not for some other failure of the handshake.
    assert!(
        outcome.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "a foreign CA's certificate: {outcome:?}"
    );

    // The operator drops the CA: the bundle both nodes serve changes
    // within the refresh interval, and the old certificate stops verifying.
    cli(
        &["ca", "rotate", "--drop-previous", "--database-url", &url],
        &env,
    )
    .await;
    let rotated = Instant::now();
    let new_bundle = loop {
        let b = http
            .get(format!("{}/.well-known/ca-bundle.pem", nodes.node_b))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if b != bundle {
            break b;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(10),
            "bundle never changed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(chain(&new_bundle).len(), 1);
    std::fs::write(&ca_file, &new_bundle).unwrap();
    let (good, said) = verify(None);
    assert!(
        !good,
        "openssl accepted a certificate of a dropped CA: {said}"
    );
    let listed = cli(&["ca", "list", "--database-url", &url], &env).await;
    assert!(
        listed.contains("\tcurrent\t") && listed.contains("\tdropped\t"),
        "{listed}"
    );
}

/// A user agent for real servers: redirects are not followed, cookies are
/// kept by hand (one jar, whichever node answers).
pub(crate) struct UserAgent {
    http: reqwest::Client,
    jar: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl UserAgent {
    pub(crate) fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Default::default(),
        }
    }

    /// Sends with the jar's cookies and keeps the ones set; a lost
    /// connection is an error.
    async fn try_send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<String>, String), reqwest::Error> {
        let cookies = {
            let jar = self.jar.lock().unwrap();
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let r = request.header("cookie", cookies).send().await?;
        for v in r.headers().get_all("set-cookie") {
            let c = cookie::Cookie::parse(v.to_str().unwrap().to_string()).unwrap();
            let mut jar = self.jar.lock().unwrap();
            if c.value().is_empty() {
                jar.remove(c.name());
            } else {
                jar.insert(c.name().to_string(), c.value().to_string());
            }
        }
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        Ok((status, location, r.text().await?))
    }
}

/// The value of a hidden field of an HTML page.
pub(crate) fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end]
        .replace("&amp;", "&")
        .replace("&#x3d;", "=")
        .replace("&#x2f;", "/")
        .replace("&quot;", "\"")
}

/// Alice signs in at node A and approves `client_id`: the code, and the
/// PKCE verifier that redeems it.
pub(crate) async fn code_at(node: &str, client_id: &str, redirect: &str) -> (String, String) {
    try_code_at(node, client_id, redirect)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`code_at`], with a lost connection or an unexpected answer as an error.
pub(crate) async fn try_code_at(
    node: &str,
    client_id: &str,
    redirect: &str,
) -> Result<(String, String), String> {
    let (verifier, challenge) = crate::code_flow::pkce();
    let ua = UserAgent::new();
    let authorize = format!(
        "{node}/authorize?{}",
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect),
                ("state", "s"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("resource", "https://mcp.example.com/mcp"),
            ])
            .finish()
    );
    let absolute = |l: String| {
        if l.starts_with('/') {
            format!("{node}{l}")
        } else {
            l
        }
    };
    let get = |url: String| ua.try_send(ua.http.get(url));
    let post = |url: String, pairs: Vec<(&'static str, String)>| {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        ua.try_send(
            ua.http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
    };
    let (status, login, _) = get(authorize).await.map_err(|e| e.to_string())?;
    if status != 303 {
        return Err(format!("/authorize answered {status}"));
    }
    let login = absolute(login.ok_or("no Location")?);
    let (_, _, page) = get(login).await.map_err(|e| e.to_string())?;
    let (status, back, body) = post(
        format!("{node}/login"),
        vec![
            ("csrf_token", field(&page, "csrf_token")),
            ("username", "alice".into()),
            ("password", "correct horse battery".into()),
            ("return_to", field(&page, "return_to")),
        ],
    )
    .await
    .map_err(|e| e.to_string())?;
    if status != 303 {
        return Err(format!("/login answered {status}: {body}"));
    }
    // The consent page, unless alice approved this client before.
    let (mut status, mut done, mut body) = get(absolute(back.ok_or("no Location")?))
        .await
        .map_err(|e| e.to_string())?;
    if status == 200 {
        (status, done, body) = post(
            format!("{node}/authorize/decision"),
            vec![
                ("csrf_token", field(&body, "csrf_token")),
                ("request", field(&body, "request")),
                ("decision", "approve".into()),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    if status != 303 {
        return Err(format!("consent answered {status}: {body}"));
    }
    let done = done.ok_or("no Location")?;
    let code = crate::code_flow::query_of(&done)
        .remove("code")
        .ok_or_else(|| format!("no code in {done}"))?;
    Ok((code, verifier))
}

/// `n` concurrent token requests with one body, alternating between the
/// two nodes; their JSON answers.
async fn race(
    http: &reqwest::Client,
    nodes: [&str; 2],
    n: usize,
    body: &[(&str, &str)],
) -> Vec<Value> {
    let body: Vec<(String, String)> = body
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tries: Vec<_> = (0..n)
        .map(|i| {
            let (http, url, body) = (
                http.clone(),
                format!("{}/token", nodes[i % 2]),
                body.clone(),
            );
            tokio::spawn(async move {
                let pairs: Vec<(&str, &str)> =
                    body.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                form(&http, &url, &pairs, None).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tries {
        answers.push(t.await.unwrap());
    }
    answers
}

/// Issue 18: a code issued at node A and redeemed concurrently at both
/// nodes (16 tries each) is redeemed once, and the replays revoke what it
/// gave; then 64 concurrent refreshes of one refresh token, half at each
/// node, give one rotation: every success carries the same new pair (the
/// retry grace returns it), and the database holds one live refresh token
/// in the family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_and_refresh_races_across_two_server_processes() {
    let (_db, url, kek) = scratch().await;
    let env = cli_env(&kek);
    cli(&["user", "create", "alice", "--database-url", &url], &env).await;
    let TwoNodes {
        node_a,
        node_b,
        http,
        _processes,
        ..
    } = two_nodes(&url, &kek).await;
    let redirect = "http://127.0.0.1:9/cb";
    let reg: Value = http
        .post(format!("{node_a}/register"))
        .json(&json!({
            "client_name": "racer",
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = reg["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{reg}"))
        .to_string();
    let (code, verifier) = code_at(&node_a, &client_id, redirect).await;

    let answers = race(
        &http,
        [&node_a, &node_b],
        32,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", redirect),
            ("client_id", &client_id),
        ],
    )
    .await;
    let mut won = Vec::new();
    for answer in answers {
        if answer.get("access_token").is_some() {
            won.push(answer);
        } else {
            assert_eq!(answer["error"], "invalid_grant", "{answer}");
        }
    }
    assert_eq!(won.len(), 1, "a code was redeemed {} times", won.len());
    // A replayed code also revokes what it gave (OAuth 2.1 §4.1.3): the
    // winner's refresh token is dead at both nodes.
    let replayed = won[0]["refresh_token"].as_str().unwrap().to_string();
    for node in [&node_a, &node_b] {
        let answer = form(
            &http,
            &format!("{node}/token"),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &replayed),
                ("client_id", &client_id),
            ],
            None,
        )
        .await;
        assert_eq!(answer["error"], "invalid_grant", "{answer}");
    }

    // A fresh grant, redeemed once, for the refresh race.
    let (code, verifier) = code_at(&node_b, &client_id, redirect).await;
    let first = form(
        &http,
        &format!("{node_a}/token"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", redirect),
            ("client_id", &client_id),
        ],
        None,
    )
    .await;
    let refresh = first["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();

    let answers = race(
        &http,
        [&node_a, &node_b],
        64,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    let mut children = std::collections::HashSet::new();
    let mut refused = Vec::new();
    for answer in answers {
        match answer.get("refresh_token") {
            Some(child) => {
                children.insert(child.as_str().unwrap().to_string());
            }
            None => refused.push(answer),
        }
    }
    assert_eq!(
        children.len(),
        1,
        "one rotation, one child; refused: {refused:?}"
    );
    for answer in &refused {
        assert_eq!(answer["error"], "invalid_grant", "{answer}");
    }

    // The family in the database: the root, rotated once, and one live child.
    let db = Database::connect(&url).await.unwrap();
    let live = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n FROM refresh_tokens WHERE rotated_at IS NULL AND revoked_at IS NULL",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(live, 1, "live refresh tokens in the family");
}

/// Issue 18: a DPoP proof spent at node A is refused when replayed to
/// node B (the `jti` is spent cluster-wide), and a fresh proof there works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_proof_replayed_to_the_other_server_process_is_refused() {
    let (_db, url, kek) = scratch().await;
    let env = cli_env(&kek);
    let (id, secret) = cli_client(
        &url,
        &env,
        &["--name", "dpop", "--grant-type", "client_credentials"],
    )
    .await;
    let TwoNodes {
        issuer,
        node_a,
        node_b,
        http,
        _processes,
    } = two_nodes(&url, &kek).await;
    let key = crate::dpop::ProofKey::new();
    let token_url = format!("{issuer}/token");
    let request = |node: &str, proof: String| {
        let body = "grant_type=client_credentials&resource=https%3A%2F%2Fmcp.example.com%2Fmcp";
        http.post(format!("{node}/token"))
            .basic_auth(&id, Some(&secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("dpop", proof)
            .body(body)
            .send()
    };
    let proof = key.sign(&key.header(), &key.claims("POST", &token_url, unix_now()));
    let first: Value = request(&node_a, proof.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["token_type"], "DPoP", "{first}");

    let replay = request(&node_b, proof).await.unwrap();
    assert_eq!(replay.status(), 400);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["error"], "invalid_dpop_proof", "{replay}");

    let fresh = key.sign(&key.header(), &key.claims("POST", &token_url, unix_now()));
    let second: Value = request(&node_b, fresh).await.unwrap().json().await.unwrap();
    assert_eq!(second["token_type"], "DPoP", "{second}");
}

/// Issue 18: a key rotated in through the CLI is in both processes' JWKS
/// within their reload interval (here 1 s; the test allows 3 s), and once
/// it signs, node A's tokens are active at node B's introspection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_reaches_both_server_processes_within_the_reload_interval() {
    let (_db, url, kek) = scratch().await;
    let env = cli_env(&kek);
    let (id, secret) = cli_client(
        &url,
        &env,
        &[
            "--name",
            "rs",
            "--grant-type",
            "client_credentials",
            "--introspect",
            "*",
        ],
    )
    .await;
    let TwoNodes {
        node_a,
        node_b,
        http,
        _processes,
        ..
    } = two_nodes_with(&url, &kek, &["--key-reload-interval", "1"]).await;
    let kids = |node: String| {
        let http = http.clone();
        async move {
            let set: Value = http
                .get(format!("{node}/jwks.json"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            set["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    // Two nodes started on an empty database each made a key; wait until
    // both serve both, then rotate.
    let started = Instant::now();
    let before = loop {
        let (mut a, mut b) = (kids(node_a.clone()).await, kids(node_b.clone()).await);
        a.sort();
        b.sort();
        if a == b {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "A {a:?}, B {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cli(
        &[
            "keys",
            "rotate",
            "--publish-delay",
            "0",
            "--database-url",
            &url,
        ],
        &env,
    )
    .await;
    let rotated = Instant::now();
    let new_kid = loop {
        let (a, b) = (kids(node_a.clone()).await, kids(node_b.clone()).await);
        let fresh: Vec<_> = b.iter().filter(|k| !before.contains(k)).cloned().collect();
        if fresh.len() == 1 && a.contains(&fresh[0]) {
            break fresh[0].clone();
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(3),
            "the rotated key is not served by both nodes after {:?}: A {a:?}, B {b:?}",
            rotated.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Node A signs with the new key once it is active (publish delay 0:
    // from the second of the rotation); node B verifies it.
    let token = loop {
        let answer = form(
            &http,
            &format!("{node_a}/token"),
            &[("grant_type", "client_credentials")],
            Some((&id, &secret)),
        )
        .await;
        let token = answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_string();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid;
        if kid.as_deref() == Some(new_kid.as_str()) {
            break token;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(4),
            "node A still signs with {kid:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let answer = form(
        &http,
        &format!("{node_b}/introspect"),
        &[("token", &token)],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(answer["active"], true, "{answer}");
}

/// A browser's cookies, by hand: what `Set-Cookie` headers set.
#[derive(Default)]
struct Jar(std::collections::BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            if let Some((pair, _)) = v.to_str().unwrap().split_once(';')
                && let Some((name, value)) = pair.split_once('=')
            {
                self.0.insert(name.to_string(), value.to_string());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

/// The next server-sent event of `response` that is not a comment.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String) -> String {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if event.lines().any(|l| l.starts_with("event:")) {
                return event;
            }
            continue;
        }
        let chunk = response.chunk().await.unwrap().expect("the stream goes on");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Issue 32: a backchannel request made at node A reaches the owner's
/// approvals page open at node B (PostgreSQL NOTIFY between processes);
/// the owner approves there; pollers racing at both nodes get one token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ciba_delivery_across_two_server_processes() {
    let (_db, url, kek) = scratch().await;
    let env = cli_env(&kek);
    let dir = tempfile::tempdir().unwrap();
    let key = client_key("proc-key");
    let agent = alice_agent(&url, &env, dir.path(), &key.jwk).await;
    let TwoNodes {
        issuer,
        node_a,
        node_b,
        http,
        _processes,
    } = two_nodes(&url, &kek).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut jar = Jar::default();
    let login = browser.get(format!("{node_b}/login")).send().await.unwrap();
    jar.take(&login);
    let csrf = hidden_field(&login.text().await.unwrap(), "csrf_token");
    let signed_in = browser
        .post(format!("{node_b}/login"))
        .header("cookie", jar.header())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("csrf_token", csrf.as_str()),
                    ("username", "alice"),
                    ("password", "correct horse battery"),
                    ("return_to", "/account/approvals"),
                ])
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    jar.take(&signed_in);

    let mut events = browser
        .get(format!("{node_b}/account/approvals/events"))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut buffer = String::new();
    let first = next_event(&mut events, &mut buffer).await;
    assert!(first.contains("event: pending"), "{first}");

    let assertion = |jti: &str| {
        let now = unix_now();
        key.assertion(
            json!({"iss": agent, "sub": agent, "aud": issuer, "jti": jti,
                             "iat": now, "exp": now + 60}),
        )
    };
    const BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let made = form(
        &http,
        &format!("{node_a}/bc-authorize"),
        &[
            ("client_assertion_type", BEARER),
            ("client_assertion", &assertion("bc-1")),
            ("login_hint", "alice"),
            ("binding_message", "two nodes"),
        ],
        None,
    )
    .await;
    let auth_req_id = made["auth_req_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{made}"))
        .to_string();
    let heard = tokio::time::timeout(Duration::from_secs(5), next_event(&mut events, &mut buffer))
        .await
        .expect("node B's page hears node A's request");
    let id = heard
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("{heard}"))
        .to_string();
    assert!(!id.is_empty() && !id.contains(','), "{heard}");

    let page = browser
        .get(format!("{node_b}/account/approvals"))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    jar.take(&page);
    let html = page.text().await.unwrap();
    assert!(html.contains("two nodes"), "{html}");
    let approved = browser
        .post(format!("{node_b}/account/approvals/{id}/approve"))
        .header("cookie", jar.header())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("csrf_token", hidden_field(&html, "csrf_token").as_str()),
                    ("password", "correct horse battery"),
                ])
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 303);

    let poll = |node: String, n: usize| {
        let http = http.clone();
        let body = [
            (
                "grant_type",
                "urn:openid:params:grant-type:ciba".to_string(),
            ),
            ("client_assertion_type", BEARER.to_string()),
            ("client_assertion", assertion(&format!("poll-{n}"))),
            ("auth_req_id", auth_req_id.clone()),
        ];
        async move {
            let pairs: Vec<(&str, &str)> = body.iter().map(|(k, v)| (*k, v.as_str())).collect();
            form(&http, &format!("{node}/token"), &pairs, None).await
        }
    };
    let answers = futures_util::future::join_all((0..8).map(|n| {
        poll(
            if n % 2 == 0 {
                node_a.clone()
            } else {
                node_b.clone()
            },
            n,
        )
    }))
    .await;
    let tokens = answers
        .iter()
        .filter(|a| a["access_token"].is_string())
        .count();
    assert_eq!(tokens, 1, "{answers:?}");
}
