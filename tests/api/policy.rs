//! Who may get which token (issue 12 items 1, 2 and 8): the resource
//! registry, client_credentials by client kind, introspection only for a
//! token's audience, and what a scope-less registration receives.

use std::io::Write as _;

use serde_json::json;

use crate::code_flow::{
    Browser, REDIRECT, exchange, get_code_at, location, pkce, query_of, refresh, user,
};
use crate::helpers::{Backend, TestApp, jwt_parts, serve_args, spawn_app, spawn_app_with};

/// A resources file as an operator writes it.
const FILE: &str = r#"
[[resource]]
uri = "https://tools.example.com/mcp"
name = "Tools"
scopes = ["tools:read", "tools:call"]

[[resource]]
uri = "https://files.example.com/"
name = "Files"
scopes = ["files:read"]
client_credentials = ["operator", "initial_token", "dynamic"]

[[resource]]
uri = "https://vault.example.com/"
name = "Vault"
scopes = ["vault:read"]
dpop_bound_access_tokens_required = true
"#;

async fn registry_app(backend: Backend) -> TestApp {
    crate::helpers::spawn_app_with_resources(backend, FILE, |_| {}).await
}

macro_rules! with_registry {
    ($name:ident) => {
        crate::both_with!(registry_app, $name);
    };
}

fn aud(token: &str) -> serde_json::Value {
    jwt_parts(token).1["aud"].clone()
}

/// A resource nobody registered is `invalid_target` at /token and at
/// /authorize; a registered one in another spelling becomes the
/// registered spelling in `aud`.
async fn unregistered_resources_are_invalid_target(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let body = app
        .token(&id, &secret, &[("resource", "https://evil.example/api")])
        .await
        .assert_error(400, "invalid_target");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not registered")
    );
    let r = app
        .token(
            &id,
            &secret,
            &[("resource", "https://MCP.example.com:443/mcp")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        aud(r.json()["access_token"].as_str().unwrap()),
        "https://mcp.example.com/mcp"
    );

    let client_id = crate::code_flow::public_client(&app).await;
    let (_, challenge) = pkce();
    let url = crate::code_flow::authorize_url(
        &client_id,
        &challenge,
        &[("resource", "https://evil.example/api")],
    );
    let r = app.get(&url).await;
    assert_eq!(r.status, 303);
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "invalid_target");
    assert_eq!(q["state"], "xyz");
}
crate::both!(unregistered_resources_are_invalid_target);

/// By default client_credentials is for clients someone vouched for: an
/// anonymous registration gets `unauthorized_client`, for the default
/// audience and for a registered resource alike.
async fn open_registrations_get_no_client_credentials(app: TestApp) {
    let reg = app
        .register_open(json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "admin",
        }))
        .await;
    let (id, secret) = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    app.token(id, secret, &[])
        .await
        .assert_error(400, "unauthorized_client");
    app.token(id, secret, &[("resource", "https://mcp.example.com/mcp")])
        .await
        .assert_error(400, "unauthorized_client");
    // The same request from a client registered with an initial access
    // token succeeds.
    let (id, secret) = app.cc_client("admin").await;
    let r = app
        .token(&id, &secret, &[("resource", "https://mcp.example.com/mcp")])
        .await;
    assert_eq!(r.status, 200);
    let events = app.audit_events_with(&["client.registered"]).await;
    assert!(events.iter().any(|e| e == "client.registered"));
}
crate::both!(open_registrations_get_no_client_credentials);

/// `--open-resources`: any absolute URI may be an audience.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_resources_accept_any_audience() {
    let mut args = serve_args();
    args.open_resources = true;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    let (id, secret) = app.cc_client("read").await;
    let r = app
        .token(&id, &secret, &[("resource", "https://anything.example/x")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        aud(r.json()["access_token"].as_str().unwrap()),
        "https://anything.example/x"
    );
}

/// The file's scopes and client kinds: scopes a resource does not offer
/// are refused (also across two resources at once); with no scope asked,
/// the client's scopes narrowed to the resource's; a resource may open
/// client_credentials to anonymous registrations.
async fn resources_file_scopes_and_kinds(app: TestApp) {
    // Registration accepts only scopes some resource offers.
    let r = app
        .json_request(
            "POST",
            "/register",
            &json!({"grant_types": ["client_credentials"], "scope": "admin"}),
            Some(&app.initial_token().await),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_client_metadata");

    let (id, secret) = app.cc_client("tools:read tools:call files:read").await;
    let tools = ("resource", "https://tools.example.com/mcp");
    let files = ("resource", "https://files.example.com/");
    let ok = |r: crate::helpers::TestResponse| {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let t = ok(app
        .token(&id, &secret, &[tools, ("scope", "tools:call")])
        .await);
    assert_eq!(t["scope"], "tools:call");
    let t = ok(app.token(&id, &secret, &[tools]).await);
    assert_eq!(t["scope"], "tools:read tools:call");
    app.token(&id, &secret, &[tools, ("scope", "files:read")])
        .await
        .assert_error(400, "invalid_scope");
    app.token(&id, &secret, &[tools, files, ("scope", "tools:read")])
        .await
        .assert_error(400, "invalid_scope");
    let t = ok(app.token(&id, &secret, &[tools, files]).await);
    assert!(t.get("scope").is_none(), "no scope both offer: {t}");
    assert_eq!(
        aud(t["access_token"].as_str().unwrap()),
        json!([
            "https://tools.example.com/mcp",
            "https://files.example.com/"
        ])
    );

    // Files lets anonymous registrations use client_credentials; Tools
    // does not.
    let reg = app
        .register_open(
            json!({"grant_types": ["client_credentials"], "scope": "files:read tools:read"}),
        )
        .await;
    let (id, secret) = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    let t = ok(app.token(id, secret, &[files]).await);
    assert_eq!(t["scope"], "files:read");
    app.token(id, secret, &[tools])
        .await
        .assert_error(400, "unauthorized_client");
}
with_registry!(resources_file_scopes_and_kinds);

/// RFC 9728 `dpop_bound_access_tokens_required`: a resource that takes
/// only DPoP-bound tokens never gets a bearer token.
async fn dpop_required_resources_get_no_bearer_tokens(app: TestApp) {
    let (id, secret) = app.cc_client("vault:read").await;
    let vault = ("resource", "https://vault.example.com/");
    let body = app
        .token(&id, &secret, &[vault])
        .await
        .assert_error(400, "invalid_dpop_proof");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("DPoP-bound")
    );
    let key = crate::dpop::ProofKey::new();
    let r = app
        .send(
            axum::http::Request::post("/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", crate::helpers::basic(&id, &secret))
                .header("DPoP", key.proof(&app))
                .body(axum::body::Body::from(format!(
                    "grant_type=client_credentials&resource={}",
                    form_urlencoded::byte_serialize(b"https://vault.example.com/")
                        .collect::<String>()
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["token_type"], "DPoP");
}
with_registry!(dpop_required_resources_get_no_bearer_tokens);

/// RFC 7662 §4: a caller learns about a token only when it is a resource
/// in the token's `aud`, or an introspector for every token; refresh
/// tokens only to the latter.
async fn introspection_answers_only_the_audience(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let r = app
        .token(&id, &secret, &[("resource", "https://mcp.example.com/mcp")])
        .await;
    let token = r.json()["access_token"].as_str().unwrap().to_string();

    let (mcp_id, mcp_secret) = app.cc_client("").await;
    app.set_introspects(&mcp_id, &["https://MCP.example.com/mcp"])
        .await;
    let (other_id, other_secret) = app.cc_client("").await;
    app.set_introspects(&other_id, &["https://other.example.com/"])
        .await;

    let seen = app.introspect_as(&mcp_id, &mcp_secret, &token).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["aud"], "https://mcp.example.com/mcp");
    let inactive = json!({"active": false});
    assert_eq!(
        app.introspect_as(&other_id, &other_secret, &token).await,
        inactive
    );
    assert_eq!(app.introspect_as(&id, &secret, &token).await, inactive);
    assert_eq!(app.introspect(&token).await["active"], true);

    user(&app, "alice").await;
    let browser = Browser::new(&app);
    let client_id = crate::code_flow::public_client(&app).await;
    let rt = crate::code_flow::refresh_token_for(&app, &browser, &client_id).await;
    assert_eq!(app.introspect_as(&mcp_id, &mcp_secret, &rt).await, inactive);
    let seen = app.introspect(&rt).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["token_type"], "refresh_token");
}
crate::both!(introspection_answers_only_the_audience);

/// MCP clients register with no scope and no grant_types: such a public
/// client gets every scope the resources offer and a refresh token, and
/// goes through consent, code and refresh with no scope parameter.
async fn scope_less_registration_through_refresh(app: TestApp) {
    let reg = app
        .register_open(json!({
            "client_name": "MCP client",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    // What the resources offer, and the server's own offline_access.
    assert_eq!(
        reg["scope"],
        "tools:read tools:call files:read vault:read offline_access"
    );
    assert_eq!(
        reg["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    let client_id = reg["client_id"].as_str().unwrap();

    user(&app, "alice").await;
    let browser = Browser::new(&app);
    let (verifier, challenge) = pkce();
    let url = format!(
        "/authorize?{}",
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("state", "xyz"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("resource", "https://tools.example.com/mcp"),
            ])
            .finish()
    );
    let code = get_code_at(&app, &browser, &url).await;
    let r = exchange(&app, client_id, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let tokens = r.json();
    assert_eq!(tokens["scope"], "tools:read tools:call");
    let claims = jwt_parts(tokens["access_token"].as_str().unwrap()).1;
    assert_eq!(claims["aud"], "https://tools.example.com/mcp");
    let r = refresh(
        &app,
        client_id,
        tokens["refresh_token"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["scope"], "tools:read tools:call");
    assert!(r.json()["refresh_token"].is_string());
}
with_registry!(scope_less_registration_through_refresh);

/// `agentauth resources` prints the registry and refuses a bad file.
#[tokio::test]
async fn bad_resources_file_is_refused_at_start() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"[[resource]]\nuri = \"/relative\"\n")
        .unwrap();
    let mut args = serve_args();
    args.resources_file = Some(file.path().to_path_buf());
    let err = agentauth::state::Setup::from_args(&args).err().unwrap();
    assert!(err.to_string().contains("absolute URI"), "{err}");
    let _ = spawn_app;
}

/// A client ID metadata document that declares private_key_jwt with its
/// own jwks_uri authenticates, but anyone can publish one: by default it
/// gets no token without a user, even under protected registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_document_clients_get_no_client_credentials() {
    let key = crate::private_key_jwt::client_key("doc-key");
    let base = crate::code_flow::document_server(vec![
        (
            "/client.json",
            json!({
                "client_id": "{base}/client.json",
                "client_name": "Document Worker",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": "{base}/jwks.json",
            }),
            "max-age=60",
        ),
        ("/jwks.json", json!({ "keys": [key.jwk] }), "max-age=60"),
    ])
    .await;
    let mut args = serve_args();
    args.insecure_fetch = true;
    args.registration = agentauth::config::RegistrationMode::Protected;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    let client_id = format!("{base}/client.json");
    let assertion = key.assertion(json!({
        "iss": client_id, "sub": client_id, "aud": crate::helpers::ISSUER,
        "jti": "doc-1", "iat": app.now(), "exp": app.now() + 60,
    }));
    let body = app
        .post_form(
            "/token",
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
        .await
        .assert_error(400, "unauthorized_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("metadata_document")
    );
}
