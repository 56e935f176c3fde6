//! An agent with its own key, end to end against a running server:
//! registers itself for its owner (an initial access token naming the
//! owner), gets a DPoP-bound token for an MCP server, a passport for a
//! site, and exchanges a token for a delegated one (a user's token from
//! `USER_TOKEN` when given, else its own passport). With `LOGIN_REQUEST`
//! set (an id a site got from `POST /login-requests`, see
//! `examples/site.rs`), it then logs in to that site by proof of work:
//! fetches the challenge with its passport, solves it, approves.
//! Last, it gets a 5-minute bridge certificate (issue 16) for a fresh
//! Ed25519 key, by CSR, and uses it for mutual TLS with a small rustls
//! server that trusts only agentauth's CA bundle, started in this process.
//!
//! ```sh
//! agentauth user create alice
//! agentauth serve --resource https://mcp.example.com/mcp --scopes "tools:read" &
//! export AGENTAUTH_INITIAL_TOKEN=$(agentauth client initial-token --owner alice)
//! cargo run --example agent -- http://127.0.0.1:8080 https://mcp.example.com/mcp
//! ```
//!
//! `cargo run --release --example agent -- pow-bench 200 15` times the
//! proof of work alone (200 random challenges at 15 bits: median, p99).
//!
//! The Ed25519 key is generated here and never leaves the process; only
//! its public JWK is registered.

use serde_json::{Value, json};

#[path = "common/agent_key.rs"]
mod agent_key;
use agent_key::{AgentKey, nonce, sha256};

/// The proof of work: a nonce with SHA-256(challenge ‖ nonce) starting
/// with `difficulty` zero bits.
fn solve(challenge: &str, difficulty: u32) -> String {
    let zero_bits = |d: &[u8]| {
        let mut bits = 0;
        for byte in d {
            if *byte != 0 {
                return bits + byte.leading_zeros();
            }
            bits += 8;
        }
        bits
    };
    let mut input = challenge.as_bytes().to_vec();
    let base = input.len();
    for n in 0u64.. {
        input.truncate(base);
        input.extend_from_slice(n.to_string().as_bytes());
        if zero_bits(&sha256(&input)) >= difficulty {
            return n.to_string();
        }
    }
    unreachable!("the nonce space is not exhausted")
}

/// `pow-bench N BITS`: solve N random challenges, print median and p99.
fn pow_bench(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let n: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let bits: u32 = args.next().map_or(Ok(15), |a| a.parse())?;
    let mut times: Vec<f64> = (0..n.max(1))
        .map(|_| {
            let started = std::time::Instant::now();
            solve(&nonce(), bits);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{n} challenges at {bits} bits: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("pow-bench") {
        args.next();
        return pow_bench(args);
    }
    let issuer = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let resource = args
        .next()
        .unwrap_or_else(|| "https://mcp.example.com/mcp".into());
    let initial = std::env::var("AGENTAUTH_INITIAL_TOKEN").map_err(|_| {
        anyhow::anyhow!("set AGENTAUTH_INITIAL_TOKEN (agentauth client initial-token --owner NAME)")
    })?;
    let http = reqwest::Client::new();
    let metadata: Value = serde_json::from_slice(
        &http
            .get(format!("{issuer}/.well-known/oauth-authorization-server"))
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let token_endpoint = metadata["token_endpoint"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no token_endpoint"))?
        .to_string();

    // 1. Register: the initial access token names the owner.
    let key = AgentKey::generate()?;
    let registration: Value = serde_json::from_slice(
        &http
            .post(format!("{issuer}/register"))
            .bearer_auth(initial.trim())
            .header("content-type", "application/json")
            .body(
                json!({ "client_name": "example agent", "jwks": { "keys": [key.jwk] } })
                    .to_string(),
            )
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let agent_id = registration["agent_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("registration failed: {registration}"))?
        .to_string();
    println!("agent {agent_id}, owned by {}", registration["owner"]);

    let post = |pairs: Vec<(&'static str, String)>, dpop: Option<String>| {
        let http = http.clone();
        let url = token_endpoint.clone();
        async move {
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            let mut request = http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
            if let Some(proof) = dpop {
                request = request.header("DPoP", proof);
            }
            let body: Value = serde_json::from_slice(&request.send().await?.bytes().await?)?;
            anyhow::ensure!(body.get("error").is_none(), "token endpoint: {body}");
            Ok::<_, anyhow::Error>(body)
        }
    };
    let auth = |key: &AgentKey| -> anyhow::Result<Vec<(&'static str, String)>> {
        Ok(vec![
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            ("client_assertion", key.assertion(&agent_id, &issuer)?),
        ])
    };

    // 2. A token for the MCP server, bound to the agent's own key.
    let mut pairs = auth(&key)?;
    pairs.extend([
        ("grant_type", "client_credentials".into()),
        ("resource", resource.clone()),
    ]);
    let token = post(pairs, Some(key.proof(&token_endpoint)?)).await?;
    println!(
        "token_type {} scope {}",
        token["token_type"], token["scope"]
    );

    // 3. A passport for a site.
    let mut pairs = auth(&key)?;
    pairs.extend([
        (
            "grant_type",
            "urn:agentauth:params:grant-type:passport".into(),
        ),
        ("audience", "https://site.example".into()),
    ]);
    let passport = post(pairs, Some(key.proof(&token_endpoint)?)).await?;
    println!(
        "passport ({}): {}",
        passport["issued_token_type"], passport["access_token"]
    );

    // 4. Token exchange: a user's token for this agent, or its own passport.
    let (subject, subject_type) = match std::env::var("USER_TOKEN") {
        Ok(t) => (t, "urn:ietf:params:oauth:token-type:access_token"),
        Err(_) => (
            passport["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            "urn:agentauth:params:token-type:passport",
        ),
    };
    let mut pairs = auth(&key)?;
    pairs.extend([
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".into(),
        ),
        ("subject_token", subject),
        ("subject_token_type", subject_type.into()),
        ("resource", resource.clone()),
    ]);
    let exchanged = post(pairs, None).await?;
    println!(
        "exchanged: {} for {resource}",
        exchanged["issued_token_type"]
    );

    // 5. Log in to a site by proof of work, with a passport for our issuer
    //    (no site named) bound to the agent's key.
    if let Ok(id) = std::env::var("LOGIN_REQUEST") {
        let mut pairs = auth(&key)?;
        pairs.push((
            "grant_type",
            "urn:agentauth:params:grant-type:passport".into(),
        ));
        let mine = post(pairs, Some(key.proof(&token_endpoint)?)).await?;
        let mine = mine["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let url = format!("{issuer}/login-requests/{id}");
        let request: Value = serde_json::from_slice(
            &http
                .get(&url)
                .header("authorization", format!("DPoP {mine}"))
                .header("DPoP", key.proof_for("GET", &url, Some(&mine))?)
                .send()
                .await?
                .bytes()
                .await?,
        )?;
        let challenge = request["challenge"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no challenge: {request}"))?;
        let difficulty = u32::try_from(request["difficulty"].as_u64().unwrap_or(64))?;
        // The name is the site's own claim unless an operator vouched for
        // the site: say which to whoever reads this.
        println!(
            "site {} ({}) asks for {:?}; solving {difficulty} bits",
            request["site"]["name"],
            if request["site_verified"] == true {
                "verified by the operator"
            } else {
                "unverified: the name is the site's own claim"
            },
            request["scope"]
        );
        let started = std::time::Instant::now();
        let solution = solve(challenge, difficulty);
        println!("solved in {:?}", started.elapsed());
        let approve = format!("{url}/approve");
        let answer: Value = serde_json::from_slice(
            &http
                .post(&approve)
                .header("authorization", format!("DPoP {mine}"))
                .header("DPoP", key.proof_for("POST", &approve, Some(&mine))?)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("challenge", challenge)
                        .append_pair("nonce", &solution)
                        .finish(),
                )
                .send()
                .await?
                .bytes()
                .await?,
        )?;
        println!("login request {id}: {}", answer["status"]);
    }
    // 6. A bridge certificate for a fresh Ed25519 key, proved by a CSR
    //    that signs a server nonce; then mutual TLS with it.
    let nonce: Value = serde_json::from_slice(
        &http
            .post(format!("{issuer}/bridge-certs/nonce"))
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let challenge = nonce["c_nonce"].as_str().unwrap_or_default();
    // challengePassword: SET { UTF8String nonce } (RFC 2985 §5.4.1).
    let mut values = vec![0x31, u8::try_from(challenge.len() + 2)?, 0x0c];
    values.push(u8::try_from(challenge.len())?);
    values.extend_from_slice(challenge.as_bytes());
    let csr = rcgen::CertificateParams::default().serialize_request_with_attributes(
        &cert_key,
        vec![rcgen::Attribute {
            oid: &[1, 2, 840, 113549, 1, 9, 7],
            values,
        }],
    )?;
    let mut pairs = auth(&key)?;
    pairs.extend([
        (
            "grant_type",
            "urn:agentauth:params:grant-type:bridge-cert".into(),
        ),
        ("csr", csr.pem()?),
    ]);
    let issued = post(pairs, None).await?;
    let chain = issued["access_token"].as_str().unwrap_or_default();
    println!(
        "bridge certificate ({}), valid {} s",
        issued["issued_token_type"], issued["expires_in"]
    );
    let bundle = http
        .get(format!("{issuer}/.well-known/ca-bundle.pem"))
        .send()
        .await?
        .text()
        .await?;
    let peer = mtls::handshake(&bundle, chain, &cert_key).await?;
    println!("mutual TLS: the server saw {peer}");
    Ok(())
}

/// A TLS server that accepts only clients whose certificate chains to
/// agentauth's bridge CA bundle, and the agent connecting to it.
mod mtls {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
        use rustls::pki_types::pem::PemObject as _;
        Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>()?)
    }

    /// Runs the handshake; returns what the server read from the client
    /// certificate (its first URI name).
    pub async fn handshake(
        bundle: &str,
        chain: &str,
        key: &rcgen::KeyPair,
    ) -> anyhow::Result<String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for der in certs(bundle)? {
            roots.add(der)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let server_cert =
            rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&server_key)?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let serve = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned())
                .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&peer).map_err(|e| anyhow::anyhow!("{e}"))?;
            let name = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .and_then(|san| {
                    san.value.general_names.iter().find_map(|n| match n {
                        x509_parser::prelude::GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                })
                .unwrap_or_default();
            tls.write_all(name.as_bytes()).await?;
            tls.shutdown().await?;
            Ok::<_, anyhow::Error>(())
        });

        let mut trusted = rustls::RootCertStore::empty();
        trusted.add(server_cert.der().clone())?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(trusted)
            .with_client_auth_cert(
                certs(chain)?,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let mut seen = String::new();
        tls.read_to_string(&mut seen).await?;
        serve.await??;
        Ok(seen)
    }
}
