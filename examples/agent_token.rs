//! An agent that gets its own token: discovers the server (RFC 8414),
//! registers itself (RFC 7591) with the operator's initial access token,
//! asks for a token for one MCP server (client_credentials + RFC 8707), and
//! verifies it as that MCP server would, against the JWKS (resource kit).
//!
//! ```sh
//! cargo run --release -- serve --resource https://mcp.example.com/mcp --scopes tools:read &
//! export AGENTAUTH_INITIAL_TOKEN=$(cargo run --release -- client initial-token)
//! cargo run --example agent_token -- http://127.0.0.1:8080 https://mcp.example.com/mcp
//! ```
//!
//! Without an initial access token the registration is anonymous, and by
//! default anonymous clients may not use client_credentials.

use serde_json::{Value, json};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let issuer = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let resource = args
        .next()
        .unwrap_or_else(|| "https://mcp.example.com/mcp".into());
    let http = reqwest::Client::new();

    let metadata: Value = serde_json::from_slice(
        &http
            .get(format!("{issuer}/.well-known/oauth-authorization-server"))
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    anyhow::ensure!(
        metadata["issuer"] == issuer.as_str(),
        "issuer mismatch: {}",
        metadata["issuer"]
    );
    let endpoint = |name: &str| {
        metadata[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no {name}"))
    };

    let registration = json!({
        "client_name": "example agent",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "tools:read",
    });
    let mut request = http
        .post(endpoint("registration_endpoint")?)
        .header("content-type", "application/json");
    if let Ok(initial) = std::env::var("AGENTAUTH_INITIAL_TOKEN") {
        request = request.bearer_auth(initial.trim());
    }
    let client: Value = serde_json::from_slice(
        &request
            .body(registration.to_string())
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let id = client["client_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("registration failed: {client}"))?;
    let secret = client["client_secret"].as_str().unwrap_or_default();
    println!("registered client {id}");

    let form = |pairs: &[(&str, &str)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    };
    let token: Value = serde_json::from_slice(
        &http
            .post(endpoint("token_endpoint")?)
            .basic_auth(id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("grant_type", "client_credentials"),
                ("scope", "tools:read"),
                ("resource", &resource),
            ]))
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let access_token = token["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("token request failed: {token}"))?;
    println!(
        "token_type {} expires_in {}",
        token["token_type"], token["expires_in"]
    );

    // What the MCP server does with it: verify against our JWKS.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(
        &http
            .get(endpoint("jwks_uri")?)
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let verifier = agentauth_resource::verifier::ResourceVerifier::new(
        issuer.as_str(),
        resource.as_str(),
        agentauth_resource::jwt::StaticKeys::from_jwks(&jwks),
    );
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::header::AUTHORIZATION,
        format!("Bearer {access_token}").parse()?,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = verifier
        .verify("POST", &resource, &headers, i64::try_from(now)?)
        .map_err(|e| anyhow::anyhow!("the MCP server would refuse it: {e:?}"))?;
    println!(
        "verified: sub {} aud {:?} scope {:?}",
        claims.sub, claims.aud, claims.scope
    );
    Ok(())
}
