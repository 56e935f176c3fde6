//! The MCP clients of 2026 on an operator's first configuration (issue
//! 30): `serve --resource https://mcp.example.com/mcp --scopes mcp:tools`,
//! and each client's behaviour reproduced exactly.

use serde_json::json;

use crate::code_flow::{Browser, PASSWORD, hidden, location, pkce, query_of, user};
use crate::helpers::{Backend, ISSUER, TestApp, form, jwt_parts, serve_args, spawn_app_with};

const MCP: &str = "https://mcp.example.com/mcp";

/// The README's quick start: one resource, its own scope, nothing else.
async fn first_configuration(backend: Backend) -> TestApp {
    let mut args = serve_args();
    args.resources = vec![MCP.into()];
    args.scopes = "mcp:tools".into();
    spawn_app_with(backend, args).await
}

/// Follows an authorization request through sign-in (as alice) and
/// consent; returns the consent page's text and where the browser was
/// sent at the end.
async fn authorize(browser: &Browser<'_>, url: &str) -> (String, String) {
    let r = browser.get(url).await;
    let r = if r.status == 303 && location(&r).starts_with("/login") {
        let login = browser.get(&location(&r)).await;
        let r = browser
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
        browser.get(&location(&r)).await
    } else {
        r
    };
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let page = String::from_utf8_lossy(&r.body).to_string();
    let r = browser
        .post(
            "/authorize/decision",
            &[
                ("csrf_token", &hidden(&r, "csrf_token")),
                ("request", &hidden(&r, "request")),
                ("decision", "approve"),
            ],
        )
        .await;
    (page, location(&r))
}

fn authorize_url(
    client_id: &str,
    redirect: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("state", "xyz"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    pairs.extend_from_slice(extra);
    format!("/authorize?{}", form(&pairs))
}

async fn exchange(
    app: &TestApp,
    client_id: &str,
    redirect: &str,
    code: &str,
    verifier: &str,
) -> serde_json::Value {
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Item 1 (SEP-2207): `offline_access` is advertised, accepted at
/// registration and at /authorize though the resource does not offer it,
/// said on the consent page, and never written into an access token.
async fn offline_access_is_the_servers_scope(app: TestApp) {
    let meta = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    let supported: Vec<&str> = meta["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(supported, ["mcp:tools", "offline_access"]);

    user(&app, "alice").await;
    let redirect = "http://127.0.0.1:33418/callback";
    let reg = app
        .register_open(json!({
            "client_name": "SEP-2207 client",
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
            "scope": "mcp:tools offline_access",
        }))
        .await;
    let client_id = reg["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);
    let (page, to) = authorize(
        &browser,
        &authorize_url(
            client_id,
            redirect,
            &challenge,
            &[("scope", "mcp:tools offline_access"), ("resource", MCP)],
        ),
    )
    .await;
    assert!(page.contains("id=\"offline\""), "{page}");
    assert!(page.contains("30 days"), "{page}");
    let code = query_of(&to)["code"].clone();
    let tokens = exchange(&app, client_id, redirect, &code, &verifier).await;
    let claims = jwt_parts(tokens["access_token"].as_str().unwrap()).1;
    assert_eq!(claims["scope"], "mcp:tools");
    assert_eq!(claims["aud"], MCP);
    assert_eq!(tokens["scope"], "mcp:tools");
    let rt = tokens["refresh_token"].as_str().expect("a refresh token");
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("refresh_token", rt),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        jwt_parts(r.json()["access_token"].as_str().unwrap()).1["scope"],
        "mcp:tools"
    );

    // A scope nobody offers is still refused.
    let r = app
        .json_request(
            "POST",
            "/register",
            &json!({"redirect_uris": [redirect], "token_endpoint_auth_method": "none",
                    "scope": "mcp:tools admin"}),
            None,
        )
        .await;
    r.assert_error(400, "invalid_client_metadata");
}
crate::both_with!(first_configuration, offline_access_is_the_servers_scope);

/// Item 2: Codex registers `127.0.0.1` and sends `localhost`; Claude Code
/// registers both portless and listens on an ephemeral port. The scheme
/// and the path still match exactly.
async fn loopback_hosts_are_interchangeable(app: TestApp) {
    user(&app, "alice").await;
    let reg = app
        .register_open(json!({
            "client_name": "Codex",
            "redirect_uris": ["http://127.0.0.1:1455/auth/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    let client_id = reg["client_id"].as_str().unwrap();
    let browser = Browser::new(&app);
    for sent in [
        "http://localhost:1455/auth/callback",
        "http://[::1]:53122/auth/callback",
        "http://127.0.0.1:53122/auth/callback",
    ] {
        let (verifier, challenge) = pkce();
        let (_, to) = authorize(
            &browser,
            &authorize_url(
                client_id,
                sent,
                &challenge,
                &[("resource", MCP), ("prompt", "consent")],
            ),
        )
        .await;
        assert!(to.starts_with(&format!("{sent}?")), "{to}");
        let code = query_of(&to)["code"].clone();
        exchange(&app, client_id, sent, &code, &verifier).await;
    }
    for refused in [
        "https://localhost:1455/auth/callback",
        "http://localhost:1455/auth/callback/",
        "http://localhost:1455/other",
        "http://localhost.evil.example:1455/auth/callback",
    ] {
        let (_, challenge) = pkce();
        let r = browser
            .get(&authorize_url(
                client_id,
                refused,
                &challenge,
                &[("resource", MCP)],
            ))
            .await;
        assert_eq!(r.status, 400, "{refused}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("redirect_uri is not registered"),
            "{refused}"
        );
    }
}
crate::both_with!(first_configuration, loopback_hosts_are_interchangeable);

/// Item 3: Codex sends no `resource`, also on refresh. With one resource
/// and no `--default-audience`, that resource is the audience.
async fn without_resource_the_only_resource_is_the_audience(app: TestApp) {
    let (id, secret) = app.cc_client("mcp:tools").await;
    let r = app.token(&id, &secret, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let claims = jwt_parts(r.json()["access_token"].as_str().unwrap()).1;
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["scope"], "mcp:tools");

    user(&app, "alice").await;
    let redirect = "http://127.0.0.1:1455/auth/callback";
    let reg = app
        .register_open(json!({
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    let client_id = reg["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);
    let (_, to) = authorize(
        &browser,
        &authorize_url(client_id, redirect, &challenge, &[("scope", "mcp:tools")]),
    )
    .await;
    let code = query_of(&to)["code"].clone();
    let tokens = exchange(&app, client_id, redirect, &code, &verifier).await;
    assert_eq!(
        jwt_parts(tokens["access_token"].as_str().unwrap()).1["aud"],
        MCP
    );
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        jwt_parts(r.json()["access_token"].as_str().unwrap()).1["aud"],
        MCP
    );
}
crate::both_with!(
    first_configuration,
    without_resource_the_only_resource_is_the_audience
);

/// Item 3, the other side: with several resources, or with
/// `--default-audience`, a request without `resource` is for the
/// default audience, as before.
async fn several_resources_keep_the_issuer_as_default(backend: Backend) {
    let mut args = serve_args();
    args.resources = vec![MCP.into(), "https://files.example.com/".into()];
    let app = spawn_app_with(backend, args).await;
    let (id, secret) = app.cc_client("read").await;
    let r = app.token(&id, &secret, &[]).await;
    assert_eq!(
        jwt_parts(r.json()["access_token"].as_str().unwrap()).1["aud"],
        ISSUER
    );

    let mut args = serve_args();
    args.resources = vec![MCP.into()];
    args.default_audience = Some("https://api.example.com/".into());
    let app = spawn_app_with(backend, args).await;
    let (id, secret) = app.cc_client("read").await;
    let r = app.token(&id, &secret, &[]).await;
    assert_eq!(
        jwt_parts(r.json()["access_token"].as_str().unwrap()).1["aud"],
        "https://api.example.com/"
    );
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_resources_keep_the_issuer_as_default_sqlite() {
    several_resources_keep_the_issuer_as_default(Backend::Sqlite).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_resources_keep_the_issuer_as_default_postgres() {
    several_resources_keep_the_issuer_as_default(Backend::Postgres).await
}

const DPOP_FILE: &str = r#"
[[resource]]
uri = "https://vault.example.com/"
scopes = ["vault:read"]
dpop = "required"

[[resource]]
uri = "https://fastmcp.example.com/mcp"
scopes = ["tools"]
dpop = "refused"

[[resource]]
uri = "https://mcp.example.com/mcp"
scopes = ["tools"]
"#;

async fn dpop_policies_app(backend: Backend) -> TestApp {
    crate::helpers::spawn_app_with_resources(backend, DPOP_FILE, |_| {}).await
}

async fn cc_with_proof(
    app: &TestApp,
    id: &str,
    secret: &str,
    resources: &[&str],
) -> crate::helpers::TestResponse {
    let key = crate::dpop::ProofKey::new();
    let mut pairs = vec![("grant_type", "client_credentials")];
    pairs.extend(resources.iter().map(|r| ("resource", *r)));
    app.send(
        axum::http::Request::post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", crate::helpers::basic(id, secret))
            .header("DPoP", key.proof(app))
            .body(axum::body::Body::from(form(&pairs)))
            .unwrap(),
    )
    .await
}

/// Item 8: a resource behind a bearer-only verifier gets Bearer tokens
/// even from a client that always proves a key (the TypeScript SDK 2.x);
/// one that accepts DPoP gets them bound; one that requires it never
/// gets a bearer token; one token cannot serve both extremes.
async fn each_resource_gets_the_tokens_it_takes(app: TestApp) {
    let (id, secret) = app.cc_client("vault:read tools").await;
    let r = cc_with_proof(&app, &id, &secret, &["https://fastmcp.example.com/mcp"]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["token_type"], "Bearer");
    assert!(
        jwt_parts(r.json()["access_token"].as_str().unwrap())
            .1
            .get("cnf")
            .is_none()
    );

    let r = cc_with_proof(&app, &id, &secret, &["https://mcp.example.com/mcp"]).await;
    assert_eq!(r.json()["token_type"], "DPoP");
    assert!(jwt_parts(r.json()["access_token"].as_str().unwrap()).1["cnf"]["jkt"].is_string());
    let r = app
        .token(&id, &secret, &[("resource", "https://mcp.example.com/mcp")])
        .await;
    assert_eq!(r.json()["token_type"], "Bearer");

    app.token(&id, &secret, &[("resource", "https://vault.example.com/")])
        .await
        .assert_error(400, "invalid_dpop_proof");
    let both = cc_with_proof(
        &app,
        &id,
        &secret,
        &[
            "https://vault.example.com/",
            "https://fastmcp.example.com/mcp",
        ],
    )
    .await;
    both.assert_error(400, "invalid_target");
}
crate::both_with!(dpop_policies_app, each_resource_gets_the_tokens_it_takes);

/// Item 7: a client that forgets the proof for a DPoP-only resource is
/// refused before its code is spent, and can retry with one.
async fn a_forgotten_proof_costs_nothing(app: TestApp) {
    user(&app, "alice").await;
    let redirect = "http://127.0.0.1:1455/cb";
    let reg = app
        .register_open(json!({
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    let client_id = reg["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);
    let (_, to) = authorize(
        &browser,
        &authorize_url(
            client_id,
            redirect,
            &challenge,
            &[
                ("scope", "vault:read"),
                ("resource", "https://vault.example.com/"),
            ],
        ),
    )
    .await;
    let code = query_of(&to)["code"].clone();
    let pairs = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", redirect),
    ];
    app.post_form("/token", &pairs, None)
        .await
        .assert_error(400, "invalid_dpop_proof");
    let key = crate::dpop::ProofKey::new();
    let r = app
        .send(
            axum::http::Request::post("/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("DPoP", key.proof(&app))
                .body(axum::body::Body::from(form(&pairs)))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["token_type"], "DPoP");
}
crate::both_with!(dpop_policies_app, a_forgotten_proof_costs_nothing);

/// The first configuration, with client metadata documents served from a
/// local server (the tests-only `--insecure-fetch-for-tests-only`).
async fn documents_app(backend: Backend) -> TestApp {
    let mut args = serve_args();
    args.resources = vec![MCP.into()];
    args.scopes = "mcp:tools".into();
    args.insecure_fetch = true;
    spawn_app_with(backend, args).await
}

/// Item 4: client metadata documents as ChatGPT and Claude publish them.
/// ChatGPT's omits `token_endpoint_auth_method`, names its keys inline,
/// carries fields nobody registered, lives at a per-connector URL and
/// redirects to `https://chatgpt.com/connector/oauth/<id>`; Claude's says
/// `none` beside the JWT bearer grant and lists portless loopback
/// redirects. A document whose `client_id` is not its URL is refused.
async fn client_documents_as_real_clients_publish_them(app: TestApp) {
    user(&app, "alice").await;
    let key = crate::private_key_jwt::client_key("chatgpt-1");
    let chatgpt_redirect = "https://chatgpt.com/connector/oauth/c_6a1f09";
    let base = crate::code_flow::document_server(vec![
        (
            "/oauth/connector_6a1f09/client.json",
            json!({
                "client_id": "{base}/oauth/connector_6a1f09/client.json",
                "client_name": "ChatGPT",
                "client_uri": "https://chatgpt.com",
                "redirect_uris": [chatgpt_redirect],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "application_type": "web",
                "jwks": {"keys": [key.jwk.clone()]},
                "contacts": [],
                "openai_connector": {"id": "c_6a1f09", "workspace": "w_1"}
            }),
            "max-age=600",
        ),
        (
            "/claude/client.json",
            json!({
                "client_id": "{base}/claude/client.json",
                "client_name": "Claude Code",
                "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
                "grant_types": [
                    "authorization_code",
                    "refresh_token",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer"
                ],
                "token_endpoint_auth_method": "none"
            }),
            "max-age=600",
        ),
        (
            "/mismatch.json",
            json!({
                "client_id": "{base}/client.json",
                "redirect_uris": ["http://localhost/callback"],
                "token_endpoint_auth_method": "none"
            }),
            "max-age=600",
        ),
    ])
    .await;
    let browser = Browser::new(&app);

    // ChatGPT: private_key_jwt with the document's own keys.
    let chatgpt = format!("{base}/oauth/connector_6a1f09/client.json");
    let (verifier, challenge) = pkce();
    let (_, to) = authorize(
        &browser,
        &authorize_url(
            &chatgpt,
            chatgpt_redirect,
            &challenge,
            &[("scope", "mcp:tools offline_access"), ("resource", MCP)],
        ),
    )
    .await;
    assert!(to.starts_with(&format!("{chatgpt_redirect}?")), "{to}");
    let code = query_of(&to)["code"].clone();
    let exchange_pairs = |assertion: Option<&str>| {
        let mut pairs = vec![
            ("grant_type", "authorization_code".to_string()),
            ("client_id", chatgpt.clone()),
            ("code", code.clone()),
            ("code_verifier", verifier.clone()),
            ("redirect_uri", chatgpt_redirect.to_string()),
        ];
        if let Some(a) = assertion {
            pairs.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            pairs.push(("client_assertion", a.to_string()));
        }
        pairs
    };
    let no_key = exchange_pairs(None);
    let no_key: Vec<(&str, &str)> = no_key.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.post_form("/token", &no_key, None)
        .await
        .assert_error(401, "invalid_client");
    let assertion = key.assertion(json!({
        "iss": chatgpt, "sub": chatgpt, "aud": ISSUER,
        "jti": agentauth::crypto::random_id().unwrap(), "iat": app.now(), "exp": app.now() + 60,
    }));
    let signed = exchange_pairs(Some(&assertion));
    let signed: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = app.post_form("/token", &signed, None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        jwt_parts(r.json()["access_token"].as_str().unwrap()).1["client_id"],
        chatgpt
    );

    // Claude Code: a public client on an ephemeral loopback port.
    let claude = format!("{base}/claude/client.json");
    let redirect = "http://localhost:53122/callback";
    let (verifier, challenge) = pkce();
    let (_, to) = authorize(
        &browser,
        &authorize_url(&claude, redirect, &challenge, &[("resource", MCP)]),
    )
    .await;
    let code = query_of(&to)["code"].clone();
    let tokens = exchange(&app, &claude, redirect, &code, &verifier).await;
    assert!(tokens["refresh_token"].is_string());

    // A document whose client_id is not its URL: refused, no redirect.
    let (_, challenge) = pkce();
    let r = browser
        .get(&authorize_url(
            &format!("{base}/mismatch.json"),
            "http://localhost:53122/callback",
            &challenge,
            &[("resource", MCP)],
        ))
        .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("location").is_none());

    // Each fetch is the first step of its client's trace: what the
    // document declared, or why it was refused.
    let first_step = |client: String| {
        let db = app.state.db.clone();
        async move {
            for _ in 0..50 {
                let steps = agentauth::store::traces::recent(&db, &client, 50)
                    .await
                    .unwrap();
                if let Some(s) = steps.iter().find(|s| s.step == "document") {
                    return s.clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("no document step for {client}");
        }
    };
    let fetched = first_step(chatgpt.clone()).await;
    assert_eq!(fetched.outcome, "ok");
    let detail = fetched.reason.unwrap();
    assert!(
        detail.contains("authenticates with private_key_jwt"),
        "{detail}"
    );
    assert!(detail.contains(chatgpt_redirect), "{detail}");
    assert!(detail.contains("kept for 600 s"), "{detail}");
    let refused = first_step(format!("{base}/mismatch.json")).await;
    assert_eq!(refused.outcome, "refused");
    assert!(refused.reason.unwrap().contains("client_id"));
    assert!(
        refused
            .fix
            .unwrap()
            .contains("publisher fixes the document")
    );
}
crate::both_with!(documents_app, client_documents_as_real_clients_publish_them);

/// The steps reach the table through a batching writer: waits until the
/// client's page shows `count` of `needle`.
async fn doctor_page(
    app: &TestApp,
    operator: &Browser<'_>,
    client_id: &str,
    needle: &str,
) -> String {
    let path = format!(
        "/admin/clients/{}",
        form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>()
    );
    for _ in 0..50 {
        let page = operator.get(&path).await;
        assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
        let html = String::from_utf8_lossy(&page.body).to_string();
        if html.contains(needle) {
            return html;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = app;
    panic!("{needle:?} never appeared on {path}");
}

/// Item 12: a deliberately broken client (wrong redirect, unregistered
/// resource, unknown scope) shows the reason of each refusal and what
/// would fix it on its operator page and in `client trace`; the person's
/// error page names only the client and the attempt; no code or token
/// ever appears in a trace.
async fn the_doctor_says_why_each_step_failed(app: TestApp) {
    use agentauth::store;
    user(&app, "alice").await;
    user(&app, "root").await;
    let root = store::users::by_username(&app.state.db, "root")
        .await
        .unwrap()
        .unwrap();
    store::users::set_admin(&app.state.db, &root.id, true)
        .await
        .unwrap();
    let redirect = "http://127.0.0.1:1455/callback";
    let reg = app
        .register_open(json!({
            "client_name": "Broken Client",
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    let client_id = reg["client_id"].as_str().unwrap().to_string();
    let browser = Browser::new(&app);
    browser.login("alice", PASSWORD).await;

    // A redirect URI nobody registered: a page, never a redirect.
    let (_, challenge) = pkce();
    let wrong = "https://attacker.example/cb";
    let r = browser
        .get(&authorize_url(
            &client_id,
            wrong,
            &challenge,
            &[("resource", MCP)],
        ))
        .await;
    assert_eq!(r.status, 400);
    let html = String::from_utf8_lossy(&r.body).to_string();
    assert!(html.contains(&client_id), "{html}");
    let attempt = html
        .split("attempt <code>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the page names the attempt")
        .to_string();
    assert!(
        !html.contains(redirect),
        "the person's page lists no registered URI: {html}"
    );

    // An unregistered resource and a scope nobody offers: back to the client.
    for extra in [
        [
            ("resource", "https://unknown.example/mcp"),
            ("scope", "mcp:tools"),
        ],
        [("resource", MCP), ("scope", "mcp:admin")],
    ] {
        let (_, challenge) = pkce();
        let r = browser
            .get(&authorize_url(&client_id, redirect, &challenge, &extra))
            .await;
        assert!(location(&r).starts_with(redirect));
    }
    // A good attempt, then a code exchange with the wrong verifier.
    let (_, challenge) = pkce();
    let (_, to) = authorize(
        &browser,
        &authorize_url(
            &client_id,
            redirect,
            &challenge,
            &[("resource", MCP), ("scope", "mcp:tools")],
        ),
    )
    .await;
    let code = query_of(&to)["code"].clone();
    app.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            (
                "code_verifier",
                "a-verifier-that-does-not-match-the-challenge-at-all",
            ),
            ("redirect_uri", redirect),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_grant");

    let operator = Browser::new(&app);
    operator.login("root", PASSWORD).await;
    let page = doctor_page(&app, &operator, &client_id, "code_exchange").await;
    for expected in [
        // The wrong redirect, with the registered ones and the attempt id.
        "redirect_uri &quot;https:&#x2f;&#x2f;attacker.example&#x2f;cb&quot; is not registered for this client; registered: http:&#x2f;&#x2f;127.0.0.1:1455&#x2f;callback",
        attempt.as_str(),
        // The resource, with the registered ones.
        "is not registered at this server",
        "registered resources: https:&#x2f;&#x2f;mcp.example.com&#x2f;mcp",
        // The scope, with what is offered.
        "does not offer scope &quot;mcp:admin&quot;",
        "scopes offered here: mcp:tools offline_access",
        // The exchange.
        "code_verifier does not match the code_challenge",
        // What the client registered, first.
        "authenticates with none; grants: authorization_code refresh_token",
    ] {
        assert!(page.contains(expected), "{expected:?} not in {page}");
    }
    assert!(!page.contains(&code), "a code in the trace");

    // The same from the database, as `agentauth client trace` reads it.
    let steps = store::traces::attempt(&app.state.db, &attempt)
        .await
        .unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].outcome, "refused");
    assert_eq!(steps[0].client_id, client_id);

    // Someone else's page: operators only.
    let r = browser.get(&format!("/admin/clients/{client_id}")).await;
    assert_eq!(r.status, 403);
}
crate::both_with!(first_configuration, the_doctor_says_why_each_step_failed);

/// Item 12's bound in all: the newest steps of every client together are
/// kept, the oldest go first.
async fn the_doctor_keeps_a_total(app: TestApp) {
    use agentauth::store::traces::{self, TraceRow};
    let rows = (0..30)
        .map(|i| TraceRow {
            client_id: format!("client-{}", i % 3),
            attempt: Some(format!("a{i:02}")),
            at: app.now(),
            step: "authorize",
            refused: false,
            reason: None,
            fix: None,
        })
        .collect();
    traces::insert_many(&app.state.db, rows).await.unwrap();
    assert_eq!(traces::keep_total(&app.state.db, 10).await.unwrap(), 20);
    let mut kept = Vec::new();
    for client in ["client-0", "client-1", "client-2"] {
        kept.extend(
            traces::recent(&app.state.db, client, 50)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.attempt.unwrap()),
        );
    }
    kept.sort();
    let newest: Vec<String> = (20..30).map(|i| format!("a{i:02}")).collect();
    assert_eq!(kept, newest);
    assert_eq!(traces::keep_total(&app.state.db, 10).await.unwrap(), 0);
}
crate::both!(the_doctor_keeps_a_total);
