//! The example MCP server (examples/mcp_server.rs) and agentauth, both
//! listening on real sockets, driven end to end (issue 14): rmcp's own
//! OAuth client discovers, registers, is consented, calls tools, steps up
//! and refreshes; agents call with DPoP-bound tokens, passports and
//! delegated tokens; every bad token gets the right challenge; the
//! introspection mode makes the kill switch bite at the resource.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationRequest, OAuthState, WWWAuthenticateParams};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::agents::{Agent, agent, set_agent_active};
use crate::code_flow::{Browser, PASSWORD, hidden, location, user};
use crate::dpop::ProofKey;
use crate::helpers::{Backend, TestApp, jwt_parts, serve_args, spawn_app_with};

#[allow(dead_code)]
#[path = "../../examples/mcp_server.rs"]
mod mcp_server;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CIBA: &str = "urn:openid:params:grant-type:ciba";
const REDIRECT: &str = "http://127.0.0.1/cb";

/// agentauth and two example MCP servers (one verifying locally, one in
/// introspection mode), each on its own port.
struct Stack {
    app: TestApp,
    issuer: String,
    /// The example server, verifying tokens locally.
    mcp: String,
    /// The same server in introspection mode.
    mcp_live: String,
    /// The client `mcp_live` introspects and reports refusals as: id, secret.
    reporter: (String, String),
    http: reqwest::Client,
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, format!("http://{addr}"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Stack {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, false).await
    }

    /// With `approvals`, the resource is registered by a resources file
    /// that declares the `mcp_tool_call` authorization details type, so
    /// that an agent can ask its owner to approve one call (issue 32).
    async fn start_with(backend: Backend, approvals: bool) -> Self {
        let (as_listener, issuer) = listener().await;
        let (mcp_listener, mcp_base) = listener().await;
        let (live_listener, live_base) = listener().await;
        let mcp = format!("{mcp_base}/mcp");
        let mcp_live = format!("{live_base}/mcp");
        let mut args = serve_args();
        args.issuer = issuer.clone();
        // offline_access is the server's own scope (SEP-2207), not the
        // resource's: clients may ask for it all the same.
        args.scopes = "mcp mcp:admin".into();
        args.resources.push(mcp.clone());
        args.resources.push(mcp_live.clone());
        args.insecure_fetch = true;
        if approvals {
            use std::io::Write as _;
            let mut file = tempfile::NamedTempFile::new().unwrap();
            write!(
                file,
                r#"
[[resource]]
uri = "{mcp}"
scopes = ["mcp", "mcp:admin"]

[[resource.authorization_details]]
type = "mcp_tool_call"
render = "Call {{tool}} with {{arguments}}"
fields.tool = {{ kind = "string", required = true }}
fields.arguments = {{ kind = "object" }}

[[resource]]
uri = "{mcp_live}"
scopes = ["mcp", "mcp:admin"]
"#
            )
            .unwrap();
            args.resources = Vec::new();
            args.resources_file = Some(file.path().to_path_buf());
            // Read at start; the file may go once the server runs.
            args.default_audience = Some(issuer.clone());
            std::mem::forget(file);
        }
        // The server's clock stands at 2027-01-15, or a day ahead of the
        // wall clock once that has passed (tokens it issues are live for
        // the resource, which reads the wall clock); what is sent to the
        // server is dated by its clock, what goes to the resource by the
        // wall clock.
        let app = spawn_app_with(backend, args).await;
        app.clock.advance((now() + 86_400 - app.now()).max(0));
        user(&app, "alice").await;
        let router = app.router.clone();
        tokio::spawn(async move { axum::serve(as_listener, router).await });

        let (introspector, secret) = app.cc_client("mcp").await;
        app.set_introspects(&introspector, &[&mcp_live]).await;
        for (listener, resource, introspect) in [
            (mcp_listener, mcp.clone(), false),
            (live_listener, mcp_live.clone(), true),
        ] {
            let options = mcp_server::Options {
                issuer: issuer.clone(),
                listen: listener.local_addr().unwrap(),
                resource: Some(resource),
                introspection_client: introspect.then(|| introspector.clone()),
                introspection_secret: introspect.then(|| secret.clone()),
                report_client: introspect.then(|| introspector.clone()),
                report_secret: introspect.then(|| secret.clone()),
                unprotected: false,
                sessions: introspect,
                dpop_required: false,
                no_status_check: false,
                status_min_ttl: 1,
                status_max_ttl: 300,
                status_grace: 60,
                spent_tokens: None,
            };
            let router = mcp_server::app(&options).await.unwrap();
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        Self {
            app,
            issuer,
            mcp,
            mcp_live,
            reporter: (introspector, secret),
            http: reqwest::Client::new(),
        }
    }

    /// POSTs `pairs` to /token as `agent`, with a DPoP proof by `key`.
    async fn agent_token(
        &self,
        agent: &Agent,
        key: Option<&ProofKey>,
        pairs: &[(&str, &str)],
    ) -> Value {
        let (status, body) = self.agent_token_answer(agent, key, pairs).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// [`Self::agent_token`]'s status and body, whatever they are.
    async fn agent_token_answer(
        &self,
        agent: &Agent,
        key: Option<&ProofKey>,
        pairs: &[(&str, &str)],
    ) -> (u16, Value) {
        let assertion = agent.key.assertion(json!({
            "iss": agent.id, "sub": agent.id, "aud": self.issuer,
            "jti": agentauth::crypto::random_id().unwrap(), "iat": self.app.now(), "exp": self.app.now() + 60,
        }));
        let mut form = vec![
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        form.extend_from_slice(pairs);
        let mut request = self
            .http
            .post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(crate::helpers::form(&form));
        if let Some(key) = key {
            let proof = key.sign(
                &key.header(),
                &key.claims("POST", &format!("{}/token", self.issuer), self.app.now()),
            );
            request = request.header("dpop", proof);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

/// How one MCP request is authorized: a fixed header, or a DPoP token with
/// a fresh proof per request.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    Dpop(&'a str, &'a ProofKey),
    /// A DPoP token whose proofs name the resource `htu`, not the URL
    /// posted to (one instance of a resource served by several).
    DpopFor(&'a str, &'a ProofKey, &'a str),
}

impl Auth<'_> {
    fn apply(self, request: reqwest::RequestBuilder, url: &str) -> reqwest::RequestBuilder {
        match self {
            Auth::Bearer(t) => request.header("authorization", format!("Bearer {t}")),
            Auth::Dpop(t, key) => Auth::DpopFor(t, key, url).apply(request, url),
            Auth::DpopFor(t, key, htu) => {
                let mut claims = key.claims("POST", htu, now());
                claims["ath"] = agentauth_resource::dpop::ath(t).into();
                request
                    .header("authorization", format!("DPoP {t}"))
                    .header("dpop", key.sign(&key.header(), &claims))
            }
        }
    }
}

/// A refusal: status and the `WWW-Authenticate` challenges.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    challenge: String,
}

async fn post_rpc(
    http: &reqwest::Client,
    url: &str,
    auth: Auth<'_>,
    session: Option<&str>,
    body: Value,
) -> Result<reqwest::Response, Refused> {
    let mut request = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = session {
        request = request.header("mcp-session-id", s);
    }
    let r = auth.apply(request, url).send().await.unwrap();
    if r.status().is_success() {
        Ok(r)
    } else {
        Err(Refused {
            status: r.status(),
            challenge: r
                .headers()
                .get_all("www-authenticate")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(" | "),
        })
    }
}

/// The JSON-RPC message with `id` in a response (SSE or JSON).
async fn rpc_result(r: reqwest::Response, id: i64) -> Value {
    let text = r.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .chain(std::iter::once(text.as_str()))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no response {id} in {text}"))
}

/// initialize, notifications/initialized, tools/call: the tool's text,
/// or the first refusal.
async fn call_tool(
    http: &reqwest::Client,
    url: &str,
    auth: Auth<'_>,
    tool: &str,
    arguments: Value,
) -> Result<String, Refused> {
    let init = post_rpc(
        http,
        url,
        auth,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "agentauth-test", "version": "1"}}}),
    )
    .await?;
    let session = init
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    rpc_result(init, 1).await;
    post_rpc(
        http,
        url,
        auth,
        session.as_deref(),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await?;
    let r = post_rpc(
        http,
        url,
        auth,
        session.as_deref(),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": tool, "arguments": arguments}}),
    )
    .await?;
    let answer = rpc_result(r, 2).await;
    Ok(answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_string())
}

async fn whoami(stack: &Stack, url: &str, auth: Auth<'_>) -> Result<Value, Refused> {
    let text = call_tool(&stack.http, url, auth, "whoami", json!({})).await?;
    Ok(serde_json::from_str(&text).unwrap())
}

fn refused_with(result: Result<impl std::fmt::Debug, Refused>, status: u16, error: &str) -> String {
    let refused = result.expect_err("the request should be refused");
    assert_eq!(refused.status.as_u16(), status, "{refused:?}");
    assert!(
        refused.challenge.contains(&format!("error=\"{error}\"")),
        "{refused:?}"
    );
    refused.challenge
}

/// Follows an authorization URL through agentauth's real pages (sign in
/// as alice when asked, approve) and returns the redirect back, with the
/// consent page's HTML.
async fn consent(stack: &Stack, browser: &Browser<'_>, url: &str) -> (String, String) {
    let path = url.strip_prefix(&stack.issuer).unwrap();
    let mut r = browser.get(path).await;
    if r.status == 303 && location(&r).starts_with("/login") {
        let login = browser.get(&location(&r)).await;
        let r2 = browser
            .post(
                "/login",
                &[
                    ("csrf_token", &hidden(&login, "csrf_token")),
                    ("username", "alice"),
                    ("password", PASSWORD),
                    ("return_to", &hidden(&login, "return_to")),
                ],
            )
            .await;
        r = browser.get(&location(&r2)).await;
    }
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let html = String::from_utf8_lossy(&r.body).replace("&#x2f;", "/");
    let back = browser
        .post(
            "/authorize/decision",
            &[
                ("csrf_token", &hidden(&r, "csrf_token")),
                ("request", &hidden(&r, "request")),
                ("decision", "approve"),
            ],
        )
        .await;
    let to = location(&back);
    assert!(to.starts_with(REDIRECT), "{to}");
    (to, html)
}

/// rmcp's OAuth client, with no configuration but the server's URL:
/// 401 → RFC 9728 → RFC 8414 → dynamic registration → code flow with PKCE
/// and `resource` through our pages → whoami → refresh → 403
/// `insufficient_scope` on the admin tool → a step-up consent that asks
/// only for the new scope → the admin tool.
async fn rmcp_client_end_to_end(backend: Backend) {
    let stack = Stack::start(backend).await;
    let browser = Browser::new(&stack.app);

    // The client's first contact: no token, a challenge naming the metadata.
    let first = ().serve(StreamableHttpClientTransport::from_uri(stack.mcp.as_str())).await;
    let challenge = first
        .err()
        .and_then(|e| e.auth_challenge().map(str::to_owned))
        .expect("a 401 challenge");
    assert!(challenge.contains("resource_metadata="), "{challenge}");

    let mut oauth = OAuthState::new(stack.mcp.as_str(), None).await.unwrap();
    oauth
        .start_authorization(
            AuthorizationRequest::new(REDIRECT)
                .with_client_name("rmcp end-to-end")
                .with_initial_scope_selection()
                .with_challenge(challenge),
        )
        .await
        .unwrap();
    let url = oauth.get_authorization_url().await.unwrap();
    let query = crate::code_flow::query_of(&url);
    assert_eq!(query["resource"], stack.mcp, "RFC 8707 resource");
    assert_eq!(query["code_challenge_method"], "S256");
    let (back, html) = consent(&stack, &browser, &url).await;
    assert!(html.contains("agentauth example MCP server"), "{html}");
    assert!(
        html.contains("Use the example&#x27;s tools") || html.contains("Use the example's tools"),
        "{html}"
    );
    oauth.handle_callback_url(&back).await.unwrap();
    let manager = oauth.into_authorization_manager().expect("authorized");
    let auth = AuthClient::new(reqwest::Client::default(), manager);
    let client = ()
        .serve(StreamableHttpClientTransport::with_client(
            auth.clone(),
            StreamableHttpClientTransportConfig::with_uri(stack.mcp.as_str()),
        ))
        .await
        .unwrap();

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"whoami") && names.contains(&"admin_echo"),
        "{names:?}"
    );
    let me = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    let me: Value = serde_json::from_str(me.content[0].as_text().unwrap().text.as_str()).unwrap();
    let alice = agentauth::store::users::by_username(&stack.app.state.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    assert_eq!(me["sub"], alice);
    assert!(me["scopes"].as_array().unwrap().contains(&json!("mcp")));
    assert!(
        !me["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("mcp:admin"))
    );

    // Refresh: a new access token from the rotated refresh token.
    let before = auth
        .auth_manager
        .lock()
        .await
        .get_access_token()
        .await
        .unwrap();
    auth.auth_manager
        .lock()
        .await
        .refresh_token()
        .await
        .unwrap();
    let after = auth
        .auth_manager
        .lock()
        .await
        .get_access_token()
        .await
        .unwrap();
    assert_ne!(before, after);
    client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();

    // The admin tool needs more scope: 403 and the scopes to step up to.
    let args = json!({"text": "stepped up"}).as_object().unwrap().clone();
    let err = client
        .call_tool(CallToolRequestParams::new("admin_echo").with_arguments(args.clone()))
        .await
        .unwrap_err();
    let header = err.auth_challenge().expect("a 403 challenge").to_string();
    let params = WWWAuthenticateParams::parse(&header, &stack.mcp.parse().unwrap());
    assert!(params.is_insufficient_scope(), "{header}");
    // The scopes to ask for: what the token has, plus what the tool needs
    // (offline_access, the grant's, is never in a token: SEP-2207).
    assert!(header.contains("scope=\"mcp mcp:admin\""), "{header}");
    let upgrade = auth
        .auth_manager
        .lock()
        .await
        .request_scope_upgrade(params.scope.as_deref().unwrap())
        .await
        .unwrap();
    let (back, html) = consent(&stack, &browser, &upgrade).await;
    let new = html
        .split("id=\"new-scopes\"")
        .nth(1)
        .unwrap()
        .split("</ul>")
        .next()
        .unwrap();
    assert!(new.contains("<code>mcp:admin</code>"), "{html}");
    assert!(
        !new.contains("<code>mcp</code>"),
        "only the new scope is asked: {html}"
    );
    assert!(html.contains("id=\"kept-scopes\""), "{html}");
    let query = crate::code_flow::query_of(&back);
    auth.auth_manager
        .lock()
        .await
        .exchange_code_for_token_with_issuer(
            &query["code"],
            &query["state"],
            query.get("iss").map(String::as_str),
        )
        .await
        .unwrap();
    let echoed = client
        .call_tool(CallToolRequestParams::new("admin_echo").with_arguments(args))
        .await
        .unwrap();
    assert_eq!(echoed.content[0].as_text().unwrap().text, "stepped up");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_end_to_end_sqlite() {
    rmcp_client_end_to_end(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_end_to_end_postgres() {
    rmcp_client_end_to_end(Backend::Postgres).await
}

/// Signs `claims` with the server's current key, or as given.
fn mint(app: &TestApp, claims: Value) -> String {
    app.state
        .tokens
        .keys
        .current()
        .signer(app.now())
        .unwrap()
        .sign("at+jwt", &claims)
        .unwrap()
}

/// Agents at the example server: a DPoP-bound token and a delegated
/// token reach `whoami` as who they are, a passport does not; a bound token without
/// its proof, with another key's proof, or with a replayed proof, a token
/// for another resource, an expired one, one signed by an unknown key and
/// an `alg: none` one are refused with the matching challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_tokens_at_the_example_server() {
    let stack = Stack::start(Backend::Sqlite).await;
    let app = &stack.app;
    let key = ProofKey::new();
    let a = agent(app, "alice", "mcp", std::slice::from_ref(&key.jwk)).await;
    let t = stack
        .agent_token(
            &a,
            Some(&key),
            &[
                ("grant_type", "client_credentials"),
                ("resource", &stack.mcp),
            ],
        )
        .await;
    assert_eq!(t["token_type"], "DPoP");
    let token = t["access_token"].as_str().unwrap();
    let me = whoami(&stack, &stack.mcp, Auth::Dpop(token, &key))
        .await
        .unwrap();
    assert_eq!(me["agent"], a.id);
    assert_eq!(me["dpop_bound"], true);
    assert_eq!(me["token"], "access_token");

    // The bound token without its proof, with another key, replayed.
    refused_with(
        whoami(&stack, &stack.mcp, Auth::Bearer(token)).await,
        401,
        "invalid_token",
    );
    let other = ProofKey::new();
    let c = refused_with(
        whoami(&stack, &stack.mcp, Auth::Dpop(token, &other)).await,
        401,
        "invalid_dpop_proof",
    );
    assert!(c.starts_with("DPoP "), "{c}");
    let mut claims = key.claims("POST", &stack.mcp, now());
    claims["ath"] = agentauth_resource::dpop::ath(token).into();
    let proof = key.sign(&key.header(), &claims);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let send = || {
        stack
            .http
            .post(&stack.mcp)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", &proof)
            .body(init.to_string())
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let replay = send().await.unwrap();
    assert_eq!(replay.status(), 401);
    assert!(
        replay.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_dpop_proof")
    );

    // A passport is no access token (SECURITY.md, "Passport used as an
    // access token"): none is issued for this server, a registered
    // resource that does not accept passports, and the example server,
    // which does not opt in, refuses one naming no site.
    let (status, p) = stack
        .agent_token_answer(
            &a,
            Some(&key),
            &[
                ("grant_type", "urn:agentauth:params:grant-type:passport"),
                ("audience", &stack.mcp),
            ],
        )
        .await;
    assert_eq!(
        (status, &p["error"]),
        (400, &json!("invalid_target")),
        "{p}"
    );
    let p = stack
        .agent_token(
            &a,
            Some(&key),
            &[("grant_type", "urn:agentauth:params:grant-type:passport")],
        )
        .await;
    let passport = p["access_token"].as_str().unwrap();
    for url in [&stack.mcp, &stack.mcp_live] {
        refused_with(
            whoami(&stack, url, Auth::Dpop(passport, &key)).await,
            401,
            "invalid_token",
        );
    }

    // A delegated token: alice's token for the agent, exchanged for one
    // at this server; whoami shows alice as the subject, the agent in `act`.
    let alice = jwt_parts(passport).1["owner"].as_str().unwrap().to_string();
    let (some_client, _) = app.cc_client("mcp").await;
    let subject = mint(
        app,
        json!({"iss": stack.issuer, "sub": alice, "aud": format!("{}/agents/{}", stack.issuer, a.id),
               "client_id": some_client, "scope": "mcp", "jti": "delegation-1",
               "iat": app.now(), "exp": app.now() + 600}),
    );
    let d = stack
        .agent_token(
            &a,
            None,
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", &subject),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("resource", &stack.mcp),
            ],
        )
        .await;
    let delegated = d["access_token"].as_str().unwrap();
    let me = whoami(&stack, &stack.mcp, Auth::Bearer(delegated))
        .await
        .unwrap();
    assert_eq!(me["sub"], alice);
    assert_eq!(me["agent"], a.id);
    assert_eq!(me["act"][0]["sub"], a.id);

    // Another resource's token; expired; unknown key; alg none.
    let elsewhere = stack
        .agent_token(
            &a,
            None,
            &[
                ("grant_type", "client_credentials"),
                ("resource", &stack.mcp_live),
            ],
        )
        .await;
    let c = refused_with(
        whoami(
            &stack,
            &stack.mcp,
            Auth::Bearer(elsewhere["access_token"].as_str().unwrap()),
        )
        .await,
        401,
        "invalid_token",
    );
    assert!(c.contains("resource_metadata="), "{c}");
    let base = json!({"iss": stack.issuer, "sub": alice, "aud": stack.mcp, "client_id": "c",
                      "scope": "mcp", "jti": "x", "iat": now() - 1000, "exp": now() - 100});
    refused_with(
        whoami(&stack, &stack.mcp, Auth::Bearer(&mint(app, base.clone()))).await,
        401,
        "invalid_token",
    );
    let stranger = crate::private_key_jwt::client_key("not-ours");
    let mut live = base.clone();
    live["exp"] = json!(now() + 600);
    let forged = stranger.sign_typed("at+jwt", live.clone());
    refused_with(
        whoami(&stack, &stack.mcp, Auth::Bearer(&forged)).await,
        401,
        "invalid_token",
    );
    let kid = jwt_parts(delegated).0["kid"].as_str().unwrap().to_string();
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
        b64(&live)
    );
    refused_with(
        whoami(&stack, &stack.mcp, Auth::Bearer(&none)).await,
        401,
        "invalid_token",
    );

    // The agent has `mcp` only: the admin tool is a step-up.
    let c = refused_with(
        call_tool(
            &stack.http,
            &stack.mcp,
            Auth::Dpop(token, &key),
            "admin_echo",
            json!({"text": "x"}),
        )
        .await,
        403,
        "insufficient_scope",
    );
    assert!(c.contains("scope=\"mcp mcp:admin\""), "{c}");
}

/// Introspection mode: an agent disabled at agentauth is refused at the
/// resource within about a second (its token's `exp` is far off), while
/// the locally verifying server still takes the token until it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_mode_makes_the_kill_switch_bite() {
    let stack = Stack::start(Backend::Sqlite).await;
    let a = agent(&stack.app, "alice", "mcp", &[]).await;
    let t = stack
        .agent_token(
            &a,
            None,
            &[
                ("grant_type", "client_credentials"),
                ("resource", &stack.mcp_live),
            ],
        )
        .await;
    let token = t["access_token"].as_str().unwrap();
    let me = whoami(&stack, &stack.mcp_live, Auth::Bearer(token))
        .await
        .unwrap();
    assert_eq!(me["agent"], a.id);

    set_agent_active(&stack.app, &a.id, false).await;
    let disabled = Instant::now();
    loop {
        match whoami(&stack, &stack.mcp_live, Auth::Bearer(token)).await {
            Ok(_) => {
                assert!(
                    disabled.elapsed() < Duration::from_secs(4),
                    "still accepted {:?} after the kill switch",
                    disabled.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(refused) => {
                assert_eq!(refused.status, 401);
                assert!(refused.challenge.contains("revoked"), "{refused:?}");
                break;
            }
        }
    }
}

/// Issue 30 item 10: the example reads `--sessions`. Without it (the
/// `mcp` server of the stack) every POST stands alone and is answered
/// with JSON, no session; with it (`mcp_live`) `initialize` opens a
/// session and answers by server-sent events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_keeps_sessions_only_when_asked() {
    let stack = Stack::start(Backend::Sqlite).await;
    let a = agent(&stack.app, "alice", "mcp", &[]).await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "agentauth-test", "version": "1"}}});
    for (url, sessions) in [(&stack.mcp, false), (&stack.mcp_live, true)] {
        let t = stack
            .agent_token(
                &a,
                None,
                &[("grant_type", "client_credentials"), ("resource", url)],
            )
            .await;
        let token = t["access_token"].as_str().unwrap();
        let r = post_rpc(
            &stack.http,
            url,
            Auth::Bearer(token),
            None,
            initialize.clone(),
        )
        .await
        .unwrap();
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(
            r.headers().contains_key("mcp-session-id"),
            sessions,
            "{url}"
        );
        if sessions {
            assert!(
                content_type.starts_with("text/event-stream"),
                "{content_type}"
            );
        } else {
            assert!(
                content_type.starts_with("application/json"),
                "{content_type}"
            );
        }
        assert!(rpc_result(r, 1).await["result"]["serverInfo"].is_object());
        // Stateless: a tool call needs no session.
        if !sessions {
            let text = call_tool(&stack.http, url, Auth::Bearer(token), "whoami", json!({}))
                .await
                .unwrap();
            assert!(text.contains(&a.id), "{text}");
        }
    }
}

/// Issue 30 item 12: a resource that reports its refusals (the kit's
/// `Reporter`; the `mcp_live` example here) puts them in the client's
/// trace with what would fix them: a token for another resource, then a
/// token without the admin tool's scope. From the attacker's side: only
/// a client that may introspect the resource may report, and only about
/// a token we signed; nobody else's report writes anything.
async fn resource_refusals_reach_the_clients_trace(backend: Backend) {
    use agentauth::store;
    let stack = Stack::start(backend).await;
    let (client, secret) = stack.app.cc_client("mcp").await;
    let token_for = |resource: String| {
        let (client, secret, app) = (client.clone(), secret.clone(), &stack.app);
        async move {
            let r = app
                .token(&client, &secret, &[("resource", &resource)])
                .await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()["access_token"].as_str().unwrap().to_string()
        }
    };
    let elsewhere = token_for(stack.mcp.clone()).await;
    refused_with(
        whoami(&stack, &stack.mcp_live, Auth::Bearer(&elsewhere)).await,
        401,
        "invalid_token",
    );
    let here = token_for(stack.mcp_live.clone()).await;
    refused_with(
        call_tool(
            &stack.http,
            &stack.mcp_live,
            Auth::Bearer(&here),
            "admin_echo",
            json!({"text": "hi"}),
        )
        .await,
        403,
        "insufficient_scope",
    );

    let mut steps = Vec::new();
    for _ in 0..50 {
        steps = store::traces::recent(&stack.app.state.db, &client, 50)
            .await
            .unwrap();
        if steps.iter().filter(|s| s.step == "resource").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reported: Vec<_> = steps.iter().filter(|s| s.step == "resource").collect();
    assert_eq!(reported.len(), 2, "{steps:?}");
    let text = |s: &entity::client_trace::Model| {
        format!(
            "{} / {}",
            s.reason.clone().unwrap_or_default(),
            s.fix.clone().unwrap_or_default()
        )
    };
    let audience = reported
        .iter()
        .map(|s| text(s))
        .find(|t| t.contains("invalid_token"))
        .unwrap();
    assert!(
        audience.contains(&format!("resource={}", stack.mcp_live)),
        "{audience}"
    );
    let scope = reported
        .iter()
        .map(|s| text(s))
        .find(|t| t.contains("insufficient_scope"))
        .unwrap();
    assert!(
        scope.contains("does not include scope `mcp:admin`"),
        "{scope}"
    );
    for s in &reported {
        assert_eq!(s.outcome, "refused");
        for token in [&elsewhere, &here] {
            assert!(!text(s).contains(token.as_str()), "a token in the trace");
        }
    }

    // The client itself may not report (it introspects nothing).
    let report = |id: &str, secret: &str, token: &str| {
        let (id, secret, token) = (id.to_string(), secret.to_string(), token.to_string());
        let (http, url, resource) = (
            stack.http.clone(),
            format!("{}/doctor/refusals", stack.issuer),
            stack.mcp_live.clone(),
        );
        async move {
            let r = http
                .post(url)
                .basic_auth(id, Some(secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(crate::helpers::form(&[
                    ("token", token.as_str()),
                    ("resource", resource.as_str()),
                    ("error", "invalid_token"),
                ]))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = report(&client, &secret, &here).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );
    let (status, _) = report(&client, "wrong secret", &here).await;
    assert_eq!(status, 401);
    // The resource's reporter, with a token we never signed.
    let (reporter, reporter_secret) = stack.reporter.clone();
    let forged = crate::private_key_jwt::client_key("not-ours").sign_typed(
        "at+jwt",
        json!({"iss": stack.issuer, "sub": client, "aud": stack.mcp_live, "client_id": client,
               "scope": "mcp", "jti": "x", "iat": now(), "exp": now() + 600}),
    );
    // Bad input from a rightful reporter: RFC 6749 §5.2 errors.
    for pairs in [
        vec![
            ("resource", stack.mcp_live.as_str()),
            ("error", "invalid_token"),
        ],
        vec![("token", here.as_str()), ("error", "invalid_token")],
        vec![
            ("token", here.as_str()),
            ("resource", stack.mcp_live.as_str()),
            ("error", "server_error"),
        ],
    ] {
        let r = stack
            .http
            .post(format!("{}/doctor/refusals", stack.issuer))
            .basic_auth(&stack.reporter.0, Some(&stack.reporter.1))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(crate::helpers::form(&pairs))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{body}");
    }
    let (status, body) = report(&reporter, &reporter_secret, &forged).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = store::traces::recent(&stack.app.state.db, &client, 50)
        .await
        .unwrap();
    assert_eq!(
        after.iter().filter(|s| s.step == "resource").count(),
        2,
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_refusals_reach_the_clients_trace_sqlite() {
    resource_refusals_reach_the_clients_trace(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_refusals_reach_the_clients_trace_postgres() {
    resource_refusals_reach_the_clients_trace(Backend::Postgres).await;
}

/// Two instances of one resource (the example's `app()` twice, on two
/// ports, `--spent-tokens` naming one SQLite file): an ordinary token's
/// `delete_note` is answered with the -31403 error naming the approval to
/// ask for; a DPoP-bound token carrying exactly that approval makes the
/// call once at one instance (initialize and notifications before it do
/// not spend it), and is refused as already used at the other, in either
/// order. The table is in a SQLite file, or in PostgreSQL.
async fn approved_calls_are_spent_once_across_instances(backend: Backend) {
    let stack = Stack::start(backend).await;
    let app = &stack.app;
    let db = tempfile::NamedTempFile::new().unwrap();
    let spent = match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", db.path().display()),
        Backend::Postgres => format!(
            "{}?options[search_path]={}",
            crate::helpers::PG_URL,
            crate::helpers::fresh_schema().await
        ),
    };
    let (la, base_a) = listener().await;
    let (lb, base_b) = listener().await;
    let resource = format!("{base_a}/mcp");
    let (a, b) = (resource.clone(), format!("{base_b}/mcp"));
    for l in [la, lb] {
        let options = mcp_server::Options {
            issuer: stack.issuer.clone(),
            listen: l.local_addr().unwrap(),
            resource: Some(resource.clone()),
            introspection_client: None,
            introspection_secret: None,
            report_client: None,
            report_secret: None,
            unprotected: false,
            sessions: false,
            dpop_required: false,
            no_status_check: false,
            status_min_ttl: 1,
            status_max_ttl: 300,
            status_grace: 60,
            spent_tokens: Some(spent.clone()),
        };
        let router = mcp_server::app(&options).await.unwrap();
        tokio::spawn(async move { axum::serve(l, router).await });
    }
    let key = ProofKey::new();
    let token = |jti: &str, details: Option<Value>| {
        let mut claims = json!({"iss": stack.issuer, "sub": "alice", "aud": resource,
            "client_id": "agent-1", "jti": jti, "iat": now(), "exp": now() + 300,
            "cnf": {"jkt": key.thumbprint()}});
        match details {
            Some(d) => claims["authorization_details"] = d,
            None => claims["scope"] = "mcp".into(),
        }
        mint(app, claims)
    };

    // An ordinary token is told which approval to ask for.
    let ordinary = token("ordinary-1", None);
    let r = post_rpc(
        &stack.http,
        &a,
        Auth::DpopFor(&ordinary, &key, &resource),
        None,
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": "delete_note", "arguments": {"id": "n2"}}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let answer = rpc_result(r, 7).await;
    assert_eq!(answer["error"]["code"], -31403, "{answer}");
    let data = &answer["error"]["data"];
    assert_eq!(
        data["authorization_details"],
        json!([{"type": "mcp_tool_call", "locations": [resource], "tool": "delete_note",
                "arguments": {"id": "n2"}}])
    );
    assert_eq!(data["authorization_servers"], json!([stack.issuer]));
    assert_eq!(data["resource"], json!(resource));
    assert_eq!(data["dpop_required"], true);

    let delete = async |at: &str, token: &str, id: &str| {
        let auth = Auth::DpopFor(token, &key, &resource);
        call_tool(&stack.http, at, auth, "delete_note", json!({ "id": id })).await
    };
    // The approval, as the error named it: once, at either instance.
    let approved = token("approval-1", Some(data["authorization_details"].clone()));
    let done = delete(&a, &approved, "n2").await.unwrap();
    assert_eq!(done, "deleted n2");
    let c = refused_with(delete(&b, &approved, "n2").await, 401, "invalid_token");
    assert!(c.contains("already used"), "{c}");

    let details = json!([{"type": "mcp_tool_call", "locations": [resource],
                          "tool": "delete_note", "arguments": {"id": "n3"}}]);
    let second = token("approval-2", Some(details));
    let done = delete(&b, &second, "n3").await.unwrap();
    assert_eq!(done, "deleted n3");
    refused_with(delete(&a, &second, "n3").await, 401, "invalid_token");
    // Another call under the approval: 403, whatever the instance.
    refused_with(delete(&a, &second, "n1").await, 403, "insufficient_scope");

    // Instance A's notes: n2 went, n1 and n3 (deleted at B) are there.
    let notes = call_tool(
        &stack.http,
        &a,
        Auth::DpopFor(&ordinary, &key, &resource),
        "list_notes",
        json!({}),
    )
    .await
    .unwrap();
    let ids: Vec<String> = serde_json::from_str::<Vec<Value>>(&notes)
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["n1", "n3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_calls_are_spent_once_across_instances_sqlite() {
    approved_calls_are_spent_once_across_instances(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_calls_are_spent_once_across_instances_postgres() {
    approved_calls_are_spent_once_across_instances(Backend::Postgres).await
}

/// Issue 32 end to end, with the example MCP server: an agent's ordinary
/// token calls `delete_note` and is told (-31403) which approval to ask
/// for; the agent asks its owner for exactly that through CIBA; the owner
/// approves on the approvals page; the agent's DPoP-bound approval token
/// makes the call once, and the same token is refused the second time.
async fn an_agent_asks_its_owner_for_one_call(backend: Backend) {
    let stack = Stack::start_with(backend, true).await;
    let app = &stack.app;
    let key = ProofKey::new();
    let a = agent(app, "alice", "mcp", std::slice::from_ref(&key.jwk)).await;
    let ordinary = stack
        .agent_token(
            &a,
            Some(&key),
            &[
                ("grant_type", "client_credentials"),
                ("resource", &stack.mcp),
            ],
        )
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post_rpc(
        &stack.http,
        &stack.mcp,
        Auth::Dpop(&ordinary, &key),
        None,
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": "delete_note", "arguments": {"id": "n2"}}}),
    )
    .await
    .unwrap();
    let answer = rpc_result(r, 7).await;
    assert_eq!(answer["error"]["code"], -31403, "{answer}");
    let data = &answer["error"]["data"];
    let details = data["authorization_details"].to_string();

    // The agent asks its owner, naming exactly what the resource named.
    let assertion = a.key.assertion(json!({
        "iss": a.id, "sub": a.id, "aud": stack.issuer,
        "jti": agentauth::crypto::random_id().unwrap(), "iat": app.now(), "exp": app.now() + 60,
    }));
    let r = stack
        .http
        .post(format!("{}/bc-authorize", stack.issuer))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(crate::helpers::form(&[
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
            ("login_hint", "alice"),
            ("binding_message", "delete n2"),
            ("authorization_details", &details),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let auth_req_id = r.json::<Value>().await.unwrap()["auth_req_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = stack
        .agent_token_answer(
            &a,
            Some(&key),
            &[("grant_type", CIBA), ("auth_req_id", &auth_req_id)],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );

    // The owner approves on the page.
    let alice = Browser::new(app);
    alice.login("alice", PASSWORD).await;
    let page = alice.get("/account/approvals").await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        html.contains("Call delete_note with {&quot;id&quot;:&quot;n2&quot;}"),
        "{html}"
    );
    let id = {
        let marker = "action=\"/account/approvals/";
        let start = html.find(marker).unwrap() + marker.len();
        html[start..start + html[start..].find('/').unwrap()].to_string()
    };
    let r = alice
        .post(
            &format!("/account/approvals/{id}/approve"),
            &[
                ("csrf_token", &hidden(&page, "csrf_token")),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    app.clock.advance(10);
    let approved = stack
        .agent_token(
            &a,
            Some(&key),
            &[("grant_type", CIBA), ("auth_req_id", &auth_req_id)],
        )
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let done = call_tool(
        &stack.http,
        &stack.mcp,
        Auth::Dpop(&approved, &key),
        "delete_note",
        json!({ "id": "n2" }),
    )
    .await
    .unwrap();
    assert!(done.contains("n2"), "{done}");
    let again = call_tool(
        &stack.http,
        &stack.mcp,
        Auth::Dpop(&approved, &key),
        "delete_note",
        json!({ "id": "n2" }),
    )
    .await
    .unwrap_err();
    assert_eq!(again.status, 401, "{again:?}");
    assert!(again.challenge.contains("already used"), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asks_its_owner_for_one_call_sqlite() {
    an_agent_asks_its_owner_for_one_call(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asks_its_owner_for_one_call_postgres() {
    an_agent_asks_its_owner_for_one_call(Backend::Postgres).await
}
