use agentauth::config::RegistrationMode;
use agentauth::crypto::{random_token, sha256};
use agentauth::store;
use axum::body::Body;
use axum::http::{Request, header};
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{Backend, ISSUER, TestApp, serve_args, spawn_app_with};

fn cc(extra: Value) -> Value {
    let mut base = json!({ "client_name": "worker", "grant_types": ["client_credentials"], "scope": "read write" });
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// RFC 7591 §3.2.1: 201 with client_id, a secret for secret-based methods,
/// a registration access token and URI; secrets stored only as hashes.
async fn registration_returns_credentials_and_stores_hashes(app: TestApp) {
    let r = app
        .json_request("POST", "/register", &cc(json!({})), None)
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let reg = r.json();
    let id = reg["client_id"].as_str().unwrap();
    let secret = reg["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 43, "256-bit secret");
    assert_eq!(reg["client_secret_expires_at"], 0);
    assert_eq!(reg["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(
        reg["registration_client_uri"],
        format!("{ISSUER}/register/{id}")
    );
    let rat = reg["registration_access_token"].as_str().unwrap();

    let stored = store::clients::get(&app.state.db, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.client_secret_hash.as_deref(),
        Some(&sha256(secret.as_bytes())[..])
    );
    assert_eq!(
        stored.registration_access_token_hash.as_deref(),
        Some(&sha256(rat.as_bytes())[..])
    );
    assert!(
        app.audit_events_with(&["client.registered"])
            .await
            .contains(&"client.registered".to_string())
    );
}
both!(registration_returns_credentials_and_stores_hashes);

/// SECURITY.md, "Registration and client metadata documents": client_id and client_secret in the request are ignored.
async fn registration_ignores_client_chosen_id_and_secret(app: TestApp) {
    let reg = app
        .register(cc(
            json!({ "client_id": "chosen", "client_secret": "chosen-secret" }),
        ))
        .await;
    assert_ne!(reg["client_id"], "chosen");
    assert_ne!(reg["client_secret"], "chosen-secret");
}
both!(registration_ignores_client_chosen_id_and_secret);

/// RFC 7591 §3.2.2 and SECURITY.md, "Registration and client metadata documents": each bad request is a 400
/// with the right code, and nothing is stored.
async fn registration_rejects_bad_metadata(app: TestApp) {
    let cases: Vec<(Value, &str)> = vec![
        (
            cc(json!({"redirect_uris": ["https://app.example.com/cb#frag"]})),
            "invalid_redirect_uri",
        ),
        (
            cc(json!({"redirect_uris": ["javascript:alert(1)"]})),
            "invalid_redirect_uri",
        ),
        (
            cc(json!({"redirect_uris": ["data:text/html,x"]})),
            "invalid_redirect_uri",
        ),
        (
            cc(json!({"redirect_uris": ["http://app.example.com/cb"]})),
            "invalid_redirect_uri",
        ),
        (
            cc(json!({"redirect_uris": ["https://*.example.com/cb"]})),
            "invalid_redirect_uri",
        ),
        (
            cc(json!({"redirect_uris": ["https://a@b@evil.example/cb"]})),
            "invalid_redirect_uri",
        ),
        (
            cc(json!({"grant_types": ["password"]})),
            "invalid_client_metadata",
        ),
        (
            cc(json!({"grant_types": ["implicit"]})),
            "invalid_client_metadata",
        ),
        (
            cc(json!({"grant_types": ["urn:example:custom"]})),
            "invalid_client_metadata",
        ),
        (
            cc(json!({"response_types": ["token"]})),
            "invalid_client_metadata",
        ),
        (
            cc(json!({"token_endpoint_auth_method": "client_secret_jwt"})),
            "invalid_client_metadata",
        ),
        (
            cc(json!({"token_endpoint_auth_method": "none"})),
            "invalid_client_metadata",
        ),
        (
            cc(json!({"token_endpoint_auth_method": "private_key_jwt"})),
            "invalid_client_metadata",
        ),
        (
            cc(
                json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
            ),
            "invalid_client_metadata",
        ),
        (
            cc(
                json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://keys.example.com/jwks"}),
            ),
            "invalid_client_metadata",
        ),
        (
            cc(json!({"logo_uri": "http://app.example.com/logo.png"})),
            "invalid_client_metadata",
        ),
        (
            cc(
                json!({"client_uri": "https://app.example.com", "policy_uri": "https://evil.example/policy"}),
            ),
            "invalid_client_metadata",
        ),
        (
            cc(json!({"scope": "read \"quoted\""})),
            "invalid_client_metadata",
        ),
        (
            cc(json!({"grant_types": "client_credentials"})),
            "invalid_client_metadata",
        ),
        (json!(["not", "an", "object"]), "invalid_client_metadata"),
    ];
    for (body, code) in cases {
        let r = app.json_request("POST", "/register", &body, None).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["error"], code, "{body}");
        assert!(r.json()["error_description"].is_string());
    }
    assert!(
        store::clients::list(&app.state.db)
            .await
            .unwrap()
            .is_empty()
    );
}
both!(registration_rejects_bad_metadata);

async fn registration_rejects_non_json_and_oversized_bodies(app: TestApp) {
    let r = app
        .send(
            Request::post("/register")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("client_name=x"))
                .unwrap(),
        )
        .await;
    r.assert_error(400, "invalid_client_metadata");

    let r = app
        .send(
            Request::post("/register")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
    r.assert_error(400, "invalid_client_metadata");

    let big = cc(json!({ "client_name": "x".repeat(17 * 1024) }));
    let r = app.json_request("POST", "/register", &big, None).await;
    r.assert_error(413, "invalid_request");
}
both!(registration_rejects_non_json_and_oversized_bodies);

/// SECURITY.md, "Registration and client metadata documents": a registration flood from one address gets 429 with
/// Retry-After.
#[tokio::test]
async fn registration_flood_is_rate_limited() {
    let mut args = serve_args();
    args.registration_rate_per_minute = 3;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    for _ in 0..3 {
        app.register(cc(json!({}))).await;
    }
    let r = app
        .json_request("POST", "/register", &cc(json!({})), None)
        .await;
    let body = r.json();
    assert_eq!(r.status, 429, "{body}");
    assert!(
        r.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1)
    );
}

/// RFC 7591 §3: protected registration needs a valid initial access
/// token; a single-use token works once; an expired one never.
#[tokio::test]
async fn protected_registration_requires_initial_access_token_sqlite() {
    protected_registration(Backend::Sqlite).await
}

#[tokio::test]
async fn protected_registration_requires_initial_access_token_postgres() {
    protected_registration(Backend::Postgres).await
}

async fn protected_registration(backend: Backend) {
    let mut args = serve_args();
    args.registration = RegistrationMode::Protected;
    let app = spawn_app_with(backend, args).await;

    let r = app
        .json_request("POST", "/register", &cc(json!({})), None)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_token");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));

    let iat = random_token().unwrap();
    store::initial_tokens::insert(
        &app.state.db,
        sha256(iat.as_bytes()),
        app.now(),
        None,
        Some(1),
        None,
    )
    .await
    .unwrap();
    let r = app
        .json_request("POST", "/register", &cc(json!({})), Some("wrong-token"))
        .await;
    assert_eq!(r.status, 401);
    let r = app
        .json_request("POST", "/register", &cc(json!({})), Some(&iat))
        .await;
    assert_eq!(r.status, 201);
    let r = app
        .json_request("POST", "/register", &cc(json!({})), Some(&iat))
        .await;
    assert_eq!(r.status, 401, "a single-use initial access token is spent");

    let expiring = random_token().unwrap();
    store::initial_tokens::insert(
        &app.state.db,
        sha256(expiring.as_bytes()),
        app.now(),
        Some(app.now() + 60),
        None,
        None,
    )
    .await
    .unwrap();
    app.clock.advance(61);
    let r = app
        .json_request("POST", "/register", &cc(json!({})), Some(&expiring))
        .await;
    assert_eq!(r.status, 401, "an expired initial access token is refused");
}

/// RFC 7592: read, update and delete with the registration access token;
/// any other token is a 401; a deleted client cannot get tokens.
async fn registration_management_with_registration_access_token(app: TestApp) {
    let reg = app.register(cc(json!({}))).await;
    let id = reg["client_id"].as_str().unwrap();
    let secret = reg["client_secret"].as_str().unwrap();
    let rat = reg["registration_access_token"].as_str().unwrap();
    let uri = format!("/register/{id}");

    let r = app.json_request("GET", &uri, &json!({}), Some(rat)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["client_name"], "worker");
    assert!(
        r.json().get("client_secret").is_none(),
        "the secret is not stored, so never returned again"
    );

    for bad in [None, Some("wrong"), Some(secret)] {
        let r = app.json_request("GET", &uri, &json!({}), bad).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], "invalid_token");
    }
    // Another client's token does not open this one.
    let other = app.register(cc(json!({}))).await;
    let r = app
        .json_request(
            "GET",
            &uri,
            &json!({}),
            other["registration_access_token"].as_str(),
        )
        .await;
    assert_eq!(r.status, 401);

    let r = app
        .json_request(
            "PUT",
            &uri,
            &cc(json!({"client_name": "renamed"})),
            Some(rat),
        )
        .await;
    r.assert_error(400, "invalid_client_metadata");
    let r = app
        .json_request(
            "PUT",
            &uri,
            &cc(json!({"client_id": id, "client_name": "renamed", "scope": "read"})),
            Some(rat),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["client_name"], "renamed");
    // The narrowed scope takes effect at once on this node.
    app.token(id, secret, &[("scope", "write")])
        .await
        .assert_error(400, "invalid_scope");

    let r = app
        .json_request(
            "PUT",
            &uri,
            &cc(json!({"client_id": id, "token_endpoint_auth_method": "client_secret_post"})),
            Some(rat),
        )
        .await;
    r.assert_error(400, "invalid_client_metadata");

    let r = app
        .json_request("DELETE", &uri, &json!({}), Some(rat))
        .await;
    assert_eq!(r.status, 204);
    app.token(id, secret, &[])
        .await
        .assert_error(401, "invalid_client");
    let r = app.json_request("GET", &uri, &json!({}), Some(rat)).await;
    assert_eq!(r.status, 401);
    let events = app
        .audit_events_with(&["client.registered", "client.updated", "client.deleted"])
        .await;
    for e in ["client.registered", "client.updated", "client.deleted"] {
        assert!(events.contains(&e.to_string()), "{e} audited");
    }
}
both!(registration_management_with_registration_access_token);

/// One use left, sixteen concurrent registrations: exactly one succeeds.
#[tokio::test]
async fn initial_access_token_last_use_has_one_winner_postgres() {
    initial_token_race(Backend::Postgres).await
}

#[tokio::test]
async fn initial_access_token_last_use_has_one_winner_sqlite() {
    initial_token_race(Backend::Sqlite).await
}

async fn initial_token_race(backend: Backend) {
    let mut args = serve_args();
    args.registration = RegistrationMode::Protected;
    let app = std::sync::Arc::new(spawn_app_with(backend, args).await);
    let iat = random_token().unwrap();
    store::initial_tokens::insert(
        &app.state.db,
        sha256(iat.as_bytes()),
        app.now(),
        None,
        Some(1),
        None,
    )
    .await
    .unwrap();
    let statuses = crate::helpers::race(16, || {
        let (app, iat) = (app.clone(), iat.clone());
        async move {
            app.json_request("POST", "/register", &cc(json!({})), Some(&iat))
                .await
                .status
                .as_u16()
        }
    })
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 401),
        "{statuses:?}"
    );
}

/// Issue 15: self-registered clients never used for `--idle-client-ttl`
/// (30 days) are reaped and then unknown (`invalid_client`); a client
/// used lately, one with a consent, and one an operator vouched for stay.
async fn idle_self_registered_clients_are_reaped(app: TestApp) {
    let metadata = serde_json::json!({
        "client_name": "MCP client", "redirect_uris": ["http://127.0.0.1/cb"],
        "grant_types": ["authorization_code"], "token_endpoint_auth_method": "none",
    });
    let idle = app.register_open(metadata.clone()).await;
    let used = app.register_open(metadata.clone()).await;
    let consented = app.register_open(metadata.clone()).await;
    let vouched = app.register(metadata.clone()).await;
    let id = |v: &serde_json::Value| v["client_id"].as_str().unwrap().to_string();
    crate::code_flow::user(&app, "alice").await;
    let alice = agentauth::store::users::by_username(&app.state.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    agentauth::store::grants::add_consent(
        &app.state.db,
        agentauth::store::grants::ConsentRow {
            user_id: alice,
            client_id: id(&consented),
            scope: "read".into(),
            resources: serde_json::json!([]),
            granted_at: app.now(),
        },
    )
    .await
    .unwrap();
    app.clock.advance(29 * 86_400);
    agentauth::store::clients::touch(&app.state.db, &id(&used), app.now())
        .await
        .unwrap();
    app.clock.advance(2 * 86_400);
    agentauth::state::reap_idle_clients(&app.state, app.now()).await;

    let exists = |client_id: String| {
        let db = app.state.db.clone();
        async move {
            agentauth::store::clients::get(&db, &client_id)
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(!exists(id(&idle)).await, "the idle client is gone");
    assert!(exists(id(&used)).await);
    assert!(exists(id(&consented)).await);
    assert!(exists(id(&vouched)).await);
    // Gone for good: the token endpoint does not know it.
    app.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &id(&idle)),
            ("code", "x"),
            ("code_verifier", "y"),
        ],
        None,
    )
    .await
    .assert_error(401, "invalid_client");
    app.audit_events_with(&["client.reaped"]).await;
}
crate::both!(idle_self_registered_clients_are_reaped);
