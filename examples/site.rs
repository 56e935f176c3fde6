//! A website logging an agent in by proof of work, with no browser: it
//! asks agentauth for a login request, hands the id to the agent, waits
//! on the server-sent events stream, and verifies the passport it gets
//! against agentauth's JWKS (the resource kit's `verify_jwt`, the key's
//! pinned algorithm).
//!
//! ```sh
//! agentauth client create --name "Example Site" --grant-type urn:agentauth:params:grant-type:pow-login --json
//! export SITE_CLIENT_ID=... SITE_CLIENT_SECRET=...
//! cargo run --example site -- http://127.0.0.1:8080 [agent-id]
//! # then, with the printed id: LOGIN_REQUEST=<id> cargo run --example agent
//! ```

use agentauth_resource::claims::{PASSPORT_TYP, PassportClaims};
use agentauth_resource::jwt::{KeySource, StaticKeys, verify_jwt};
use base64::Engine as _;
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let issuer = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let agent = args.next();
    let id = std::env::var("SITE_CLIENT_ID").map_err(|_| anyhow::anyhow!("set SITE_CLIENT_ID"))?;
    let secret = std::env::var("SITE_CLIENT_SECRET")
        .map_err(|_| anyhow::anyhow!("set SITE_CLIENT_SECRET"))?;
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encode(&id),
            encode(&secret)
        ))
    );
    let http = reqwest::Client::new();

    // 1. Ask for a login.
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("scope", "read");
    if let Some(a) = &agent {
        form.append_pair("agent", a);
    }
    let started = std::time::Instant::now();
    let created: Value = serde_json::from_slice(
        &http
            .post(format!("{issuer}/login-requests"))
            .header("authorization", &basic)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let request_id = created["login_request_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no login request: {created}"))?;
    println!(
        "login request {request_id} (expires in {} s); hand it to the agent",
        created["expires_in"]
    );

    // 2. Wait for the outcome: one `outcome` event, then the stream ends.
    let mut response = http
        .get(format!("{issuer}/login-requests/{request_id}/events"))
        .header("authorization", &basic)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "events: {}",
        response.status()
    );
    let mut buffer = String::new();
    let outcome: Value = loop {
        let Some(chunk) = response.chunk().await? else {
            anyhow::bail!("the stream ended without an outcome (reconnect to learn it)");
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(data) = buffer
            .split("\n\n")
            .filter(|e| e.contains("event: outcome"))
            .find_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        {
            break serde_json::from_str(data)?;
        }
    };
    println!(
        "outcome {} after {:?}",
        outcome["status"],
        started.elapsed()
    );
    let Some(passport) = outcome["passport"].as_str() else {
        return Ok(());
    };

    // 3. Verify the passport locally: our JWKS, the key's own algorithm,
    //    our issuer, this site as the audience, unexpired.
    let jwks = http
        .get(format!("{issuer}/jwks.json"))
        .send()
        .await?
        .bytes()
        .await?;
    let keys = StaticKeys::from_jwks(&serde_json::from_slice(&jwks)?);
    let claims: PassportClaims = verify_jwt(passport, PASSPORT_TYP, |kid| keys.key(kid))
        .map_err(|e| anyhow::anyhow!("the passport does not verify: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    anyhow::ensure!(claims.iss == issuer, "passport from another issuer");
    anyhow::ensure!(
        claims.aud.as_ref().is_some_and(|a| a.contains(&id)),
        "passport for another site"
    );
    anyhow::ensure!(claims.exp > now, "passport expired");
    println!(
        "logged in: agent {} ({}) of owner {}, scope {:?}, key {}",
        claims.sub, claims.agent_name, claims.owner, claims.scope, claims.cnf.jkt
    );
    Ok(())
}
