//! An agent that asks its owner before one MCP tool call (issue 32), end
//! to end against a running agentauth and MCP server:
//!
//! 1. registers itself for its owner (an initial access token naming the
//!    owner) with an Ed25519 key, and gets an ordinary DPoP-bound token
//!    for the MCP server;
//! 2. calls the tool; the server answers the JSON-RPC error -31403 with
//!    the exact `authorization_details` to ask for;
//! 3. asks its owner for them by CIBA (`/bc-authorize`, poll mode) and
//!    waits, printing where the owner approves;
//! 4. with the approval token (DPoP-bound, one call) makes the call, then
//!    shows that the same token is refused for a second one.
//!
//! ```sh
//! # resources.toml declares the mcp_tool_call type for the MCP server:
//! #   [[resource]]
//! #   uri = "http://127.0.0.1:8090/mcp"
//! #   scopes = ["mcp"]
//! #   [[resource.authorization_details]]
//! #   type = "mcp_tool_call"
//! #   render = "Call the tool {tool} with {arguments}"
//! #   fields.tool = { kind = "string", required = true }
//! #   fields.arguments = { kind = "object" }
//! agentauth user create alice
//! agentauth serve --resources-file resources.toml &
//! cargo run --example mcp_server -- --issuer http://127.0.0.1:8080 \
//!     --resource http://127.0.0.1:8090/mcp --listen 127.0.0.1:8090 &
//! export AGENTAUTH_INITIAL_TOKEN=$(agentauth client initial-token --owner alice)
//! cargo run --example approval -- http://127.0.0.1:8080 http://127.0.0.1:8090/mcp alice \
//!     delete_note '{"id":"n2"}'
//! # then approve at http://127.0.0.1:8080/account/approvals
//! ```

use std::time::Duration;

use serde_json::{Value, json};

#[path = "common/agent_key.rs"]
mod agent_key;
use agent_key::AgentKey;

const CIBA: &str = "urn:openid:params:grant-type:ciba";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The agent, as the token endpoint and the backchannel endpoint know it.
struct Agent {
    id: String,
    key: AgentKey,
    issuer: String,
    http: reqwest::Client,
}

impl Agent {
    /// POSTs a form signed by the agent's client assertion, with a DPoP
    /// proof for the URL when asked; answers the status and JSON body.
    async fn post(
        &self,
        path: &str,
        pairs: &[(&str, &str)],
        dpop: bool,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.issuer);
        let assertion = self.key.assertion(&self.id, &self.issuer)?;
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
            ])
            .extend_pairs(pairs.iter().copied())
            .finish();
        let mut request = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if dpop {
            request = request.header("DPoP", self.key.proof(&url)?);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, serde_json::from_slice(&response.bytes().await?)?))
    }

    /// One MCP `tools/call` with a DPoP-bound token (a stateless server:
    /// one POST, a JSON answer). Answers the HTTP status and the body.
    async fn call(
        &self,
        mcp: &str,
        token: &str,
        tool: &str,
        arguments: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(mcp)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("authorization", format!("DPoP {token}"))
            .header("DPoP", self.key.proof_for("POST", mcp, Some(token))?)
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": tool, "arguments": arguments}})
                .to_string(),
            )
            .send()
            .await?;
        let status = response.status().as_u16();
        // A refused token's reason is in its challenge (RFC 6750 §3).
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await?;
        Ok((
            status,
            match challenge {
                Some(c) if status == 401 || status == 403 => Value::String(c),
                _ => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            },
        ))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut next = |what: &str| {
        args.next().ok_or_else(|| {
            anyhow::anyhow!(
                "usage: approval ISSUER MCP_URL OWNER TOOL ARGUMENTS_JSON (missing {what})"
            )
        })
    };
    let issuer = next("ISSUER")?;
    let mcp = next("MCP_URL")?;
    let owner = next("OWNER")?;
    let tool = next("TOOL")?;
    let arguments: Value = serde_json::from_str(&next("ARGUMENTS_JSON")?)?;
    let initial = std::env::var("AGENTAUTH_INITIAL_TOKEN").map_err(|_| {
        anyhow::anyhow!("set AGENTAUTH_INITIAL_TOKEN (agentauth client initial-token --owner NAME)")
    })?;
    let http = reqwest::Client::new();

    // 1. Register, then an ordinary token for the MCP server.
    let key = AgentKey::generate()?;
    let registration: Value = http
        .post(format!("{issuer}/register"))
        .bearer_auth(initial.trim())
        .json(&json!({ "client_name": "approval example", "jwks": { "keys": [key.jwk] } }))
        .send()
        .await?
        .json()
        .await?;
    let id = registration["agent_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("registration failed: {registration}"))?
        .to_string();
    let agent = Agent {
        id,
        key,
        issuer: issuer.clone(),
        http,
    };
    let (status, ordinary) = agent
        .post(
            "/token",
            &[("grant_type", "client_credentials"), ("resource", &mcp)],
            true,
        )
        .await?;
    anyhow::ensure!(status == 200, "token endpoint: {ordinary}");
    let ordinary = ordinary["access_token"].as_str().unwrap_or_default();

    // 2. The call, refused: the error names the approval to ask for.
    let (_, answer) = agent.call(&mcp, ordinary, &tool, &arguments).await?;
    if answer["error"]["code"] != -31403 {
        println!("the call needs no approval: {answer}");
        return Ok(());
    }
    let details = answer["error"]["data"]["authorization_details"].to_string();
    println!("{tool} needs approval: {details}");

    // 3. Ask the owner (CIBA, poll mode), then wait.
    let message = format!("{tool} from the approval example");
    let (status, started) = agent
        .post(
            "/bc-authorize",
            &[
                ("login_hint", &owner),
                ("binding_message", &message),
                ("authorization_details", &details),
            ],
            false,
        )
        .await?;
    anyhow::ensure!(status == 200, "backchannel endpoint: {started}");
    let auth_req_id = started["auth_req_id"].as_str().unwrap_or_default();
    let mut interval = started["interval"].as_u64().unwrap_or(5);
    println!(
        "asked {owner}: approve \"{message}\" at {issuer}/account/approvals within {} s",
        started["expires_in"]
    );
    let approved = loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let (status, body) = agent
            .post(
                "/token",
                &[("grant_type", CIBA), ("auth_req_id", auth_req_id)],
                true,
            )
            .await?;
        match (status, body["error"].as_str()) {
            (200, _) => break body,
            (_, Some("authorization_pending")) => {}
            (_, Some("slow_down")) => interval += 5,
            _ => anyhow::bail!("no approval: {body}"),
        }
    };
    let token = approved["access_token"].as_str().unwrap_or_default();
    println!(
        "approved: a {} token for {} s",
        approved["token_type"], approved["expires_in"]
    );

    // 4. The call, once; the same token a second time is refused.
    let (status, done) = agent.call(&mcp, token, &tool, &arguments).await?;
    println!("call: {status} {done}");
    let (status, again) = agent.call(&mcp, token, &tool, &arguments).await?;
    println!("the same token again: {status} {again}");
    Ok(())
}
