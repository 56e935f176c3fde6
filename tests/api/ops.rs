use crate::both;
use crate::helpers::TestApp;

async fn health_readiness_and_metrics(app: TestApp) {
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
    app.access_token("read").await;
    let m = app.get("/metrics").await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains("agentauth_tokens_issued_total{grant_type=\"client_credentials\"} 1"),
        "{text}"
    );
    assert!(text.contains("agentauth_http_requests_total"));
}
both!(health_readiness_and_metrics);

/// A storage failure is a 503 with Retry-After, never a panic, a 500 or a
/// success that did not happen; introspection fails closed; metadata and
/// JWKS are still served from memory; /healthz stays up, /readyz is 503.
async fn storage_failure_answers_503_with_retry_after(app: TestApp) {
    let (id, secret, token) = app.access_token("read").await;
    app.state.db.clone().close().await.unwrap();

    let r = app
        .json_request(
            "POST",
            "/register",
            &serde_json::json!({"grant_types":["client_credentials"]}),
            None,
        )
        .await;
    r.assert_error(503, "temporarily_unavailable");
    assert_eq!(r.header("retry-after"), Some("5"));

    // The client is cached, so authentication passes; the revocation check
    // needs the database and must not report the token active.
    let r = app
        .post_form("/introspect", &[("token", &token)], Some((&id, &secret)))
        .await;
    r.assert_error(503, "temporarily_unavailable");

    let r = app
        .post_form("/revoke", &[("token", &token)], Some((&id, &secret)))
        .await;
    r.assert_error(503, "temporarily_unavailable");

    assert_eq!(app.get("/readyz").await.status, 503);
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/jwks.json").await.status, 200);
    assert_eq!(
        app.get("/.well-known/oauth-authorization-server")
            .await
            .status,
        200
    );
}
both!(storage_failure_answers_503_with_retry_after);

#[tokio::test]
async fn unknown_path_is_a_json_404() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    let r = app.get("/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
}

/// A malformed query string at an HTML page is a 400 page, not axum's
/// plain-text rejection; the OpenAPI document is served and read-only.
#[tokio::test]
async fn malformed_page_queries_are_html_400s_and_openapi_is_served() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    for path in [
        "/login?return_to=a&return_to=b",
        "/signup?return_to=a&return_to=b",
    ] {
        // The query is refused before the handler runs, so /signup answers
        // 400 too although sign-up is off here.
        let r = app.get(path).await;
        assert_eq!(r.status, 400, "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}: {:?}",
            r.header("content-type")
        );
    }
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/token"]["post"].is_object());
    let r = app
        .send(
            axum::http::Request::post("/openapi.json")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 405);
}

/// Upkeep deletes expired replay rows, revocations, sessions, refresh
/// tokens and day-old codes, and nothing live.
async fn purge_removes_only_expired_rows(app: TestApp) {
    let db = &app.state.db;
    let now = app.now();
    agentauth::store::replay::use_once(db, "old", now - 1)
        .await
        .unwrap();
    agentauth::store::replay::use_once(db, "live", now + 60)
        .await
        .unwrap();
    agentauth::store::users::create_session(db, [1u8; 32], "u", now - 100, 10)
        .await
        .unwrap();
    agentauth::store::users::create_session(db, [2u8; 32], "u", now, 3600)
        .await
        .unwrap();
    // Revocations, refresh tokens and codes: one expired, one live each
    // (codes are kept a day past expiry, to recognise a late replay).
    use agentauth::store::{grants, revocations};
    revocations::revoke(db, "jti-old", "c", now - 1, now - 100)
        .await
        .unwrap();
    revocations::revoke(db, "jti-live", "c", now + 600, now)
        .await
        .unwrap();
    let refresh = |hash: u8, expires_at: i64| grants::RefreshRow {
        token_hash: vec![hash; 32],
        family_id: format!("f{hash}"),
        generation: 0,
        client_id: "c".into(),
        user_id: "u".into(),
        scope: "read".into(),
        resources: serde_json::json!([]),
        dpop_jkt: None,
        created_at: now - 100,
        expires_at,
        rotated_at: None,
        revoked_at: None,
        access_jti: format!("a{hash}"),
        access_exp: now,
        retry_sealed: None,
    };
    grants::insert_refresh(db, refresh(1, now - 1))
        .await
        .unwrap();
    grants::insert_refresh(db, refresh(2, now + 3600))
        .await
        .unwrap();
    let code = |hash: u8, expires_at: i64| grants::CodeRow {
        code_hash: vec![hash; 32],
        client_id: "c".into(),
        user_id: "u".into(),
        redirect_uri: "https://app.example.com/cb".into(),
        code_challenge: "x".into(),
        scope: "read".into(),
        resources: serde_json::json!([]),
        dpop_jkt: None,
        auth_time: now - 90_000,
        expires_at,
        consumed_at: None,
        family_id: None,
        access_jti: None,
        access_exp: None,
        authorization_details: None,
    };
    grants::insert_code(db, code(1, now - 86_401))
        .await
        .unwrap();
    grants::insert_code(db, code(2, now - 60)).await.unwrap();
    // DPoP jtis (PostgreSQL keeps them in their own table).
    let mut expected = 5;
    if matches!(app.backend, crate::helpers::Backend::Postgres) {
        let won = agentauth::store::replay::use_many_fast(
            db,
            &[("dpop:old".into(), now - 1), ("dpop:live".into(), now + 60)],
        )
        .await
        .unwrap();
        assert_eq!(won, [true, true]);
        expected += 1;
    }
    assert_eq!(
        agentauth::store::purge_expired(db, now).await.unwrap(),
        expected
    );
    if matches!(app.backend, crate::helpers::Backend::Postgres) {
        let again = agentauth::store::replay::use_many_fast(
            db,
            &[
                ("dpop:old".into(), now + 60),
                ("dpop:live".into(), now + 60),
            ],
        )
        .await
        .unwrap();
        assert_eq!(again, [true, false], "the live jti is still spent");
    }
    assert!(revocations::is_revoked(db, "jti-live").await.unwrap());
    assert!(!revocations::is_revoked(db, "jti-old").await.unwrap());
    assert!(grants::refresh(db, [2u8; 32]).await.unwrap().is_some());
    assert!(grants::refresh(db, [1u8; 32]).await.unwrap().is_none());
    assert!(
        grants::code(db, [2u8; 32]).await.unwrap().is_some(),
        "a replay is still recognised"
    );
    assert!(grants::code(db, [1u8; 32]).await.unwrap().is_none());
    assert!(
        !agentauth::store::replay::use_once(db, "live", now + 60)
            .await
            .unwrap(),
        "live row kept"
    );
    assert!(
        agentauth::store::users::session(db, [2u8; 32], now)
            .await
            .unwrap()
            .is_some()
    );
}
both!(purge_removes_only_expired_rows);

/// Every response says `nosniff` and `no-referrer`; the OAuth endpoints say
/// `no-store` on success and on error alike; a body over the global limit is
/// refused before any handler reads it.
#[tokio::test]
async fn security_headers_no_store_and_body_limit() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    for path in [
        "/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/nope",
    ] {
        let r = app.get(path).await;
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
    let r = app
        .post_form("/token", &[("grant_type", "client_credentials")], None)
        .await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("pragma"), Some("no-cache"));

    // Past every route's own limit: refused before the handler, by length.
    let big = "a".repeat(100 * 1024);
    let r = app
        .send(
            axum::http::Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("content-length", big.len())
                .body(axum::body::Body::from(big))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 413);
}

/// A handler that panics answers 500 `server_error` (never the panic's
/// text), with the security headers and no-store, the panic is counted in
/// /metrics, and the server goes on serving.
async fn a_panicking_handler_is_a_500_server_error_and_counted(mut app: TestApp) {
    use axum::Router;
    use axum::routing::get;
    let real = app.router.clone();
    app.router = agentauth::router::with_common_layers(
        Router::new().route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("a detail the caller must not see");
                }
                "never"
            }),
        ),
        app.state.clone(),
    );
    let r = app.get("/boom").await;
    r.assert_error(500, "server_error");
    assert!(!String::from_utf8_lossy(&r.body).contains("detail"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(app.get("/boom").await.status, 500);

    app.router = real;
    assert_eq!(app.get("/healthz").await.status, 200);
    let text = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert!(text.contains("agentauth_handler_panics_total 2"), "{text}");
    assert!(
        text.contains(
            "agentauth_http_requests_total{route=\"/boom\",method=\"GET\",status=\"500\"} 2"
        ),
        "{text}"
    );
}
both!(a_panicking_handler_is_a_500_server_error_and_counted);

/// Another process holds the SQLite file's write lock past the busy
/// timeout: writes answer 503 with Retry-After (never 500), reads and
/// metadata keep answering, nothing half-written remains, and the node
/// recovers when the lock is released, with no restart. A node on a
/// read-only file answers the same way.
#[tokio::test]
async fn locked_or_read_only_sqlite_answers_503_and_recovers() {
    use sea_orm::sqlx::{Connection, Executor, SqliteConnection};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agentauth.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let db = agentauth::store::connect(&url, 4, None).await.unwrap();
    let app = crate::helpers::spawn_app_on(
        crate::helpers::Backend::Sqlite,
        db,
        Some(dir),
        crate::helpers::serve_args(),
    )
    .await;
    let register = serde_json::json!({
        "redirect_uris": ["http://127.0.0.1/cb"],
        "token_endpoint_auth_method": "none",
        "client_name": "while locked",
    });
    let clients = |app: &TestApp| {
        let db = app.state.db.clone();
        async move {
            use sea_orm::{EntityTrait, PaginatorTrait};
            entity::client::Entity::find().count(&db).await.unwrap()
        }
    };
    let before = clients(&app).await;

    let mut holder = SqliteConnection::connect(&url).await.unwrap();
    holder.execute("BEGIN EXCLUSIVE").await.unwrap();
    let r = app.json_request("POST", "/register", &register, None).await;
    r.assert_error(503, "temporarily_unavailable");
    assert!(r.header("retry-after").is_some());
    assert_eq!(app.get("/jwks.json").await.status, 200);
    assert_eq!(app.get("/healthz").await.status, 200);
    holder.execute("COMMIT").await.unwrap();

    assert_eq!(
        clients(&app).await,
        before,
        "the refused registration left a row"
    );
    let r = app.json_request("POST", "/register", &register, None).await;
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(clients(&app).await, before + 1);

    // A second node on the same file, opened read-only.
    let ro = format!("sqlite://{}?mode=ro", file.display());
    let db = agentauth::store::connect(&ro, 2, None).await.unwrap();
    let reader = crate::helpers::spawn_app_keyed(
        crate::helpers::Backend::Sqlite,
        db,
        None,
        crate::helpers::serve_args(),
        app.kek_bytes,
    )
    .await;
    let r = reader
        .json_request("POST", "/register", &register, None)
        .await;
    r.assert_error(503, "temporarily_unavailable");
    assert!(r.header("retry-after").is_some());
    assert_eq!(reader.get("/jwks.json").await.status, 200);
    assert_eq!(clients(&app).await, before + 1);
}
