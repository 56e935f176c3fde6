//! Proof-of-work logins under load, end to end: each of C workers plays a
//! site and the agent it logs in, over and over for D seconds:
//!
//! 1. the site creates a login request naming the agent (`POST
//!    /login-requests`, client_secret_basic) and opens its event stream;
//! 2. the agent reads the challenge (`Authorization: DPoP <passport>` and
//!    a DPoP proof), solves it at the difficulty the server set, approves;
//! 3. the site receives the passport on the stream.
//!
//! Latency is step 1's request to the passport's arrival at the site
//! (the agent's solve included, and reported on its own). The agent's
//! passport is fetched once, at start. Prints one JSON object.
//!
//! ```sh
//! login_load ISSUER SITE_ID SITE_SECRET AGENT_ID AGENT_KEY.pk8 [C] [SECONDS]
//! ```
//!
//! The server needs `--login-rate` and `--pow-free-rate` above the load
//! (one site and one agent make every request; see bench/login.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

struct Agent {
    id: String,
    key: EncodingKey,
    x: String,
}

impl Agent {
    fn load(id: &str, pk8: &str) -> anyhow::Result<Self> {
        let der = std::fs::read(pk8)?;
        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| anyhow::anyhow!("bad key"))?;
        Ok(Self {
            id: id.into(),
            x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            key: EncodingKey::from_ed_der(&der),
        })
    }

    fn proof(&self, htm: &str, url: &str, token: Option<&str>) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(
            json!({ "kty": "OKP", "crv": "Ed25519", "x": self.x }),
        )?);
        let mut claims = json!({ "jti": nonce(), "htm": htm, "htu": url, "iat": now() });
        if let Some(t) = token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(sha256(t.as_bytes())));
        }
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }

    fn assertion(&self, kid: &str, issuer: &str) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        let now = now();
        Ok(jsonwebtoken::encode(
            &header,
            &json!({ "iss": self.id, "sub": self.id, "aud": issuer, "jti": nonce(),
                     "iat": now, "exp": now + 60 }),
            &self.key,
        )?)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn nonce() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).ok();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

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
    (0u64..)
        .map(|n| n.to_string())
        .find(|n| zero_bits(&sha256(format!("{challenge}{n}").as_bytes())) >= difficulty)
        .unwrap_or_default()
}

struct Run {
    issuer: String,
    basic: String,
    agent: Agent,
    passport: String,
    http: reqwest::Client,
}

/// One login; (end-to-end latency, solve time).
async fn login(run: &Run) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let created: Value = run
        .http
        .post(format!("{}/login-requests", run.issuer))
        .header("authorization", &run.basic)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("agent={}&scope=read", run.agent.id))
        .send()
        .await?
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b))??;
    let id = created["login_request_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("create: {created}"))?
        .to_string();
    let url = format!("{}/login-requests/{id}", run.issuer);

    // The site waits on the stream while the agent works.
    let mut stream = run
        .http
        .get(format!("{url}/events"))
        .header("authorization", &run.basic)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    anyhow::ensure!(stream.status() == 200, "events: {}", stream.status());
    let site = tokio::spawn(async move {
        let mut body = Vec::new();
        while let Some(chunk) = stream.chunk().await? {
            body.extend_from_slice(&chunk);
            let text = String::from_utf8_lossy(&body);
            if let Some(event) = text
                .split("\n\n")
                .find(|e| e.starts_with("event: outcome") && text.contains(&format!("{e}\n\n")))
            {
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or_default();
                let outcome: Value = serde_json::from_str(data)?;
                anyhow::ensure!(
                    outcome["status"] == "approved" && outcome["passport"].is_string(),
                    "outcome: {outcome}"
                );
                return Ok::<_, anyhow::Error>(());
            }
        }
        anyhow::bail!("stream ended: {}", String::from_utf8_lossy(&body))
    });

    let auth = format!("DPoP {}", run.passport);
    let read: Value = run
        .http
        .get(&url)
        .header("authorization", &auth)
        .header("DPoP", run.agent.proof("GET", &url, Some(&run.passport))?)
        .send()
        .await?
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b))??;
    let challenge = read["challenge"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("read: {read}"))?
        .to_string();
    let difficulty = u32::try_from(read["difficulty"].as_u64().unwrap_or(64))?;
    let solving = Instant::now();
    let (challenge, solution) = tokio::task::spawn_blocking(move || {
        let s = solve(&challenge, difficulty);
        (challenge, s)
    })
    .await?;
    let solve_time = solving.elapsed();
    let approve = format!("{url}/approve");
    let answer = run
        .http
        .post(&approve)
        .header("authorization", &auth)
        .header(
            "DPoP",
            run.agent.proof("POST", &approve, Some(&run.passport))?,
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("challenge={challenge}&nonce={solution}"))
        .send()
        .await?;
    anyhow::ensure!(answer.status() == 200, "approve: {}", answer.status());
    site.await??;
    Ok((started.elapsed(), solve_time))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: login_load ISSUER SITE_ID SITE_SECRET AGENT_ID AGENT_KEY.pk8 [C] [SECONDS]"
    );
    let (issuer, site_id, secret, agent_id, pk8) =
        (&args[0], &args[1], &args[2], &args[3], &args[4]);
    let workers: usize = args.get(5).map_or(Ok(8), |s| s.parse())?;
    let seconds: u64 = args.get(6).map_or(Ok(10), |s| s.parse())?;
    let kid = std::path::Path::new(pk8)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("a")
        .to_string();
    let agent = Agent::load(agent_id, pk8)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers * 2)
        .build()?;

    // The agent's passport for our own issuer, bound to its key.
    let token_url = format!("{issuer}/token");
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:agentauth:params:grant-type:passport")
        .append_pair(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .append_pair("client_assertion", &agent.assertion(&kid, issuer)?)
        .finish();
    let passport: Value = http
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("DPoP", agent.proof("POST", &token_url, None)?)
        .body(body)
        .send()
        .await?
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b))??;
    let passport = passport["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("passport: {passport}"))?
        .to_string();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_urlencoded::byte_serialize(site_id.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
        ))
    );
    let run = Arc::new(Run {
        issuer: issuer.clone(),
        basic,
        agent,
        passport,
        http,
    });

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let run = run.clone();
            tokio::spawn(async move {
                let (mut latencies, mut solves, mut errors) = (Vec::new(), Vec::new(), Vec::new());
                while Instant::now() < deadline {
                    match login(&run).await {
                        Ok((latency, solve)) => {
                            latencies.push(latency);
                            solves.push(solve);
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (latencies, solves, errors)
            })
        })
        .collect();
    let (mut latencies, mut solves, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for task in tasks {
        let (l, s, e) = task.await?;
        latencies.extend(l);
        solves.extend(s);
        errors.extend(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    solves.sort();
    let error_count = errors.len();
    errors.sort();
    errors.dedup();
    println!(
        "{}",
        json!({
            "workers": workers,
            "seconds": elapsed,
            "logins": latencies.len(),
            "logins_per_second": latencies.len() as f64 / elapsed,
            "latency_ms": { "p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99),
                            "max": percentile(&latencies, 1.0) },
            "solve_ms": { "p50": percentile(&solves, 0.5), "p99": percentile(&solves, 0.99) },
            "errors": errors.iter().take(5).collect::<Vec<_>>(),
            "error_count": error_count,
        })
    );
    Ok(())
}
