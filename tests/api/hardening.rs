//! Issue 12: what real MCP clients and attackers do. One regression test per
//! item fixed so far.

use serde_json::json;

use crate::both;
use crate::helpers::{Backend, ISSUER, TestApp, serve_args, spawn_app_with};

/// Item 11: MCP clients and openid-client try OpenID Connect discovery
/// first; it serves the same document. Public clients may revoke, so
/// `none` is a revocation auth method.
async fn discovery_at_both_well_known_locations(app: TestApp) {
    let a = app.get("/.well-known/oauth-authorization-server").await;
    let b = app.get("/.well-known/openid-configuration").await;
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    assert_eq!(a.body, b.body);
    let m = a.json();
    assert!(
        m["revocation_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
    assert!(
        !m["introspection_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
}
both!(discovery_at_both_well_known_locations);

/// Item 11: RFC 8414 §3.1 for an issuer with a path: the well-known suffix
/// goes between host and path (and OIDC's appended form works too).
#[tokio::test]
async fn discovery_for_an_issuer_with_a_path() {
    let mut args = serve_args();
    args.issuer = format!("{ISSUER}/tenant-a");
    let app = spawn_app_with(Backend::Sqlite, args).await;
    for path in [
        "/.well-known/oauth-authorization-server/tenant-a",
        "/.well-known/openid-configuration/tenant-a",
        "/tenant-a/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["issuer"], format!("{ISSUER}/tenant-a"), "{path}");
    }
}

/// Item 12: `application_type` is validated and echoed; a web client
/// redirects only to https.
async fn application_type_is_validated_and_echoed(app: TestApp) {
    let native = app
        .json_request(
            "POST",
            "/register",
            &json!({"application_type": "native", "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}),
            None,
        )
        .await;
    assert_eq!(native.status, 201, "{}", native.json());
    assert_eq!(native.json()["application_type"], "native");
    for (metadata, error) in [
        (
            json!({"application_type": "web", "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"application_type": "web", "redirect_uris": ["com.example.app:/cb"], "token_endpoint_auth_method": "none"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"application_type": "desktop", "redirect_uris": ["https://app.example.com/cb"]}),
            "invalid_client_metadata",
        ),
    ] {
        app.json_request("POST", "/register", &metadata, None)
            .await
            .assert_error(400, error);
    }
    let web = app
        .json_request(
            "POST",
            "/register",
            &json!({"application_type": "web", "redirect_uris": ["https://app.example.com/cb"]}),
            None,
        )
        .await;
    assert_eq!(web.status, 201);
    assert_eq!(web.json()["application_type"], "web");
}
both!(application_type_is_validated_and_echoed);

/// Item 12: a bounded number of `resource` values per request (each
/// becomes an `aud` entry of the token).
/// (Resources are open here: the registry is not the point.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_resources_are_invalid_target() {
    let mut args = serve_args();
    args.open_resources = true;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    let (id, secret) = app.cc_client("read").await;
    let resources: Vec<String> = (0..9)
        .map(|i| format!("https://mcp{i}.example.com/"))
        .collect();
    let mut extra: Vec<(&str, &str)> = resources.iter().map(|r| ("resource", r.as_str())).collect();
    app.token(&id, &secret, &extra)
        .await
        .assert_error(400, "invalid_target");
    extra.truncate(8);
    let r = app.token(&id, &secret, &extra).await;
    assert_eq!(r.status, 200, "{}", r.json());
}

/// Item 16: `--metrics-token` puts /metrics behind a bearer token;
/// `--metrics-listen` takes it off the main listener.
#[tokio::test]
async fn metrics_behind_a_token_or_elsewhere() {
    let mut args = serve_args();
    args.metrics_token = Some("s3cret-scrape-token".into());
    let app = spawn_app_with(Backend::Sqlite, args).await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer"))
    );
    let bearer = |t: &str| {
        axum::http::Request::get("/metrics")
            .header("authorization", format!("Bearer {t}"))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    assert_eq!(app.send(bearer("wrong")).await.status, 401);
    let r = app.send(bearer("s3cret-scrape-token")).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("agentauth_"));

    let mut args = serve_args();
    args.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_app_with(Backend::Sqlite, args).await;
    assert_eq!(app.get("/metrics").await.status, 404);
    let side = agentauth::router::metrics(app.state.clone());
    let r = tower::ServiceExt::oneshot(
        side,
        axum::http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
}

/// Item 9: a client registered with `http://localhost/callback` that
/// listens on an ephemeral port (as a widely used MCP client does) is let
/// through; another host is not.
async fn localhost_redirects_may_change_port(app: TestApp) {
    let reg = app
        .register(json!({
            "grant_types": ["authorization_code"],
            "redirect_uris": ["http://localhost/callback"],
            "token_endpoint_auth_method": "none",
            "scope": "read",
        }))
        .await;
    let client_id = reg["client_id"].as_str().unwrap();
    let (_, challenge) = crate::code_flow::pkce();
    let url = |redirect: &str| {
        format!(
            "/authorize?{}",
            crate::helpers::form(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect),
                ("scope", "read"),
                ("state", "s"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
        )
    };
    // Accepted: the user is sent to sign in.
    let r = app.get(&url("http://localhost:53111/callback")).await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("location").unwrap().starts_with("/login"));
    // Issue 30 item 2: the loopback hosts stand for one another (Codex).
    let r = app.get(&url("http://127.0.0.1:53111/callback")).await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    for bad in [
        "http://localhost.evil.example:53111/callback",
        "https://localhost:53111/callback",
        "http://localhost:53111/callback/x",
    ] {
        let r = app.get(&url(bad)).await;
        assert_eq!(r.status, 400, "{bad}: never a redirect");
        assert!(r.header("location").is_none());
    }
}
both!(localhost_redirects_may_change_port);

/// Item 5: a redemption that loses a race for the code is a replay too: the
/// winner's tokens are revoked (RFC 9700 §4.5).
async fn losing_a_code_race_revokes_the_winner(app: TestApp) {
    use crate::code_flow::{Browser, exchange, get_code, pkce, public_client, user};
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (app, client_id, code, verifier) = (
                app.clone(),
                client_id.clone(),
                code.clone(),
                verifier.clone(),
            );
            tokio::spawn(async move { exchange(&app, &client_id, &code, &verifier).await })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 200 {
            winners.push(r.json());
        }
    }
    assert_eq!(winners.len(), 1);
    let at = winners[0]["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(at).await, json!({"active": false}));
    let rt = winners[0]["refresh_token"].as_str().unwrap();
    crate::code_flow::refresh(&app, &client_id, rt, &[])
        .await
        .assert_error(400, "invalid_grant");
}
both!(losing_a_code_race_revokes_the_winner);

/// Item 15: the login throttle counts failures only: an owner who signs in
/// many times a minute is never refused; a guesser is, right password or not.
#[tokio::test]
async fn login_throttle_counts_failures_not_successes() {
    use crate::code_flow::{Browser, PASSWORD, user};
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    user(&app, "alice").await;
    for _ in 0..8 {
        let browser = Browser::new(&app);
        assert_eq!(browser.login("alice", PASSWORD).await.status, 303);
    }
    let browser = Browser::new(&app);
    for _ in 0..5 {
        assert_eq!(browser.login("alice", "wrong password").await.status, 401);
    }
    assert_eq!(browser.login("alice", PASSWORD).await.status, 429);
}

fn cors_request(
    method: &str,
    path: &str,
    origin: &str,
    preflight: bool,
) -> axum::http::Request<axum::body::Body> {
    let mut b = axum::http::Request::builder()
        .method(if preflight { "OPTIONS" } else { method })
        .uri(path)
        .header("origin", origin);
    if preflight {
        b = b.header("access-control-request-method", method).header(
            "access-control-request-headers",
            "authorization, content-type, dpop",
        );
    } else if method == "POST" {
        b = b.header("content-type", "application/x-www-form-urlencoded");
    }
    b.body(axum::body::Body::from(if method == "POST" && !preflight {
        "grant_type=client_credentials"
    } else {
        ""
    }))
    .unwrap()
}

/// Item 7: browser-based MCP clients reach the OAuth endpoints and the
/// public documents across origins; the HTML pages never answer CORS.
async fn cors_for_api_and_documents_never_for_pages(app: TestApp) {
    let origin = "https://inspector.example";
    for path in ["/token", "/register", "/revoke", "/introspect"] {
        let r = app.send(cors_request("POST", path, origin, true)).await;
        assert!(r.status.is_success(), "{path} preflight: {}", r.status);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        let methods = r
            .header("access-control-allow-methods")
            .unwrap_or_default()
            .to_string();
        assert!(methods.contains("POST"), "{path}: {methods}");
        let headers = r
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            headers.contains("dpop") && headers.contains("authorization"),
            "{headers}"
        );
        assert_eq!(r.header("access-control-allow-credentials"), None);
    }
    let r = app
        .send(cors_request("POST", "/token", origin, false))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(
        r.header("access-control-expose-headers")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .contains("dpop-nonce")
    );
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/jwks.json",
    ] {
        let r = app.send(cors_request("GET", path, origin, false)).await;
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
    }
    for path in ["/login", "/account", "/authorize"] {
        let r = app.send(cors_request("GET", path, origin, false)).await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{path}");
        let r = app.send(cors_request("POST", path, origin, true)).await;
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "{path} preflight"
        );
    }
}
both!(cors_for_api_and_documents_never_for_pages);

/// Item 7: `--cors-allowed-origins` narrows the API to listed origins; the
/// public documents stay readable from anywhere.
#[tokio::test]
async fn cors_allow_list() {
    let mut args = serve_args();
    args.cors_allowed_origins = vec!["https://inspector.example/".into()];
    let app = spawn_app_with(Backend::Sqlite, args).await;
    let r = app
        .send(cors_request(
            "POST",
            "/token",
            "https://inspector.example",
            true,
        ))
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://inspector.example")
    );
    let r = app
        .send(cors_request("POST", "/token", "https://evil.example", true))
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = app
        .send(cors_request(
            "GET",
            "/jwks.json",
            "https://evil.example",
            false,
        ))
        .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

/// Item 3: deleting a user revokes what they granted (refresh families,
/// access tokens, consents, codes); a new password ends their sessions and
/// refresh families.
async fn deleting_or_repasswording_a_user_revokes_their_grants(app: TestApp) {
    use crate::code_flow::{Browser, exchange, get_code, pkce, public_client, refresh, user};
    use agentauth::store;
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let browser = Browser::new(&app);

    // A new password: sessions end, refresh families are revoked.
    let (verifier, challenge) = pkce();
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let tokens = exchange(&app, &client_id, &code, &verifier).await.json();
    let hash = agentauth::accounts::hash_password("another long password".into())
        .await
        .unwrap();
    assert!(
        store::users::set_password(&app.state.db, "alice", hash, app.now())
            .await
            .unwrap()
    );
    let rt = tokens["refresh_token"].as_str().unwrap();
    refresh(&app, &client_id, rt, &[])
        .await
        .assert_error(400, "invalid_grant");
    let at = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(at).await, json!({"active": false}));
    let r = browser.get("/account").await;
    assert_eq!(r.status, 303, "the session ended");

    // Deletion: a code issued before it can no longer be redeemed, tokens die.
    let browser = Browser::new(&app);
    store::users::set_password(
        &app.state.db,
        "alice",
        agentauth::accounts::hash_password(crate::code_flow::PASSWORD.into())
            .await
            .unwrap(),
        app.now(),
    )
    .await
    .unwrap();
    let (verifier, challenge) = pkce();
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let tokens = exchange(&app, &client_id, &code, &verifier).await.json();
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    let (verifier2, challenge2) = pkce();
    let code2 = get_code(&app, &browser, &client_id, &challenge2).await;
    assert!(
        store::users::delete(
            &app.state.db,
            "alice",
            app.now(),
            store::users::deleted_event(app.now(), "test"),
        )
        .await
        .unwrap()
        .is_some()
    );
    exchange(&app, &client_id, &code2, &verifier2)
        .await
        .assert_error(400, "invalid_grant");
    refresh(
        &app,
        &client_id,
        tokens["refresh_token"].as_str().unwrap(),
        &[],
    )
    .await
    .assert_error(400, "invalid_grant");
    let at = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(at).await, json!({"active": false}));
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let consents = entity::consent::Entity::find()
        .filter(entity::consent::Column::ClientId.eq(client_id.clone()))
        .count(&app.state.db)
        .await
        .unwrap();
    assert_eq!(consents, 0);
}
both!(deleting_or_repasswording_a_user_revokes_their_grants);

/// Item 14: with an https issuer the cookies are `__Host-` prefixed
/// (Secure, Path=/, no Domain), and a CSRF token is bound to the session it
/// was rendered for: after a new sign-in the old form is refused.
#[tokio::test]
async fn host_prefixed_cookies_and_session_bound_csrf() {
    use crate::code_flow::{Browser, PASSWORD, hidden, user};
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    user(&app, "alice").await;
    let browser = Browser::new(&app);
    let r = browser.login("alice", PASSWORD).await;
    let cookies: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-agentauth_session="))
        .expect("__Host- session cookie");
    assert!(session.contains("Secure") && session.contains("Path=/"));
    assert!(!session.to_ascii_lowercase().contains("domain="));
    assert!(browser.cookie("__Host-agentauth_csrf").is_some());

    let account = browser.get("/account").await;
    assert_eq!(account.status, 200);
    let old_token = hidden(&account, "csrf_token");
    // A new sign-in: a new session, so the form rendered before is stale.
    assert_eq!(browser.login("alice", PASSWORD).await.status, 303);
    browser.post("/logout", &[("csrf_token", &old_token)]).await;
    assert_eq!(browser.get("/account").await.status, 200, "still signed in");
    let fresh = hidden(&browser.get("/account").await, "csrf_token");
    assert_ne!(fresh, old_token);
    browser.post("/logout", &[("csrf_token", &fresh)]).await;
    assert_eq!(browser.get("/account").await.status, 303, "signed out");
}

/// Item 15: behind a reverse proxy listed in `--trusted-proxies`, rate
/// limits key on the client in `X-Forwarded-For`; from anyone else the
/// header is ignored (a client cannot pose as another).
#[tokio::test]
async fn trusted_proxies_decide_whose_x_forwarded_for_counts() {
    async fn register(app: &TestApp, xff: &str) -> u16 {
        let request = axum::http::Request::post("/register")
            .header("content-type", "application/json")
            .header("x-forwarded-for", xff)
            .body(axum::body::Body::from(
                json!({"grant_types": ["client_credentials"]}).to_string(),
            ))
            .unwrap();
        app.send(request).await.status.as_u16()
    }
    // The test peer is 192.0.2.10 (MockConnectInfo).
    let mut args = serve_args();
    args.registration_rate_per_minute = 2;
    args.trusted_proxies = vec!["192.0.2.0/24".into()];
    let app = spawn_app_with(Backend::Sqlite, args).await;
    assert_eq!(register(&app, "203.0.113.7").await, 201);
    assert_eq!(register(&app, "198.51.100.1, 203.0.113.7").await, 201);
    assert_eq!(register(&app, "203.0.113.7").await, 429, "same client");
    assert_eq!(register(&app, "203.0.113.8").await, 201, "another client");
    assert_eq!(
        register(&app, "203.0.113.9, 192.0.2.77").await,
        201,
        "past a second trusted proxy"
    );

    // Without trusted proxies the header means nothing: all one peer.
    let mut args = serve_args();
    args.registration_rate_per_minute = 2;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    assert_eq!(register(&app, "203.0.113.1").await, 201);
    assert_eq!(register(&app, "203.0.113.2").await, 201);
    assert_eq!(register(&app, "203.0.113.3").await, 429);
}

#[test]
fn client_address_walks_x_forwarded_for_from_the_right() {
    use agentauth::http::client_address;
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let peer = Some("10.0.0.1".parse().unwrap());
    let h = |v: &str| {
        let mut m = axum::http::HeaderMap::new();
        m.insert("x-forwarded-for", v.parse().unwrap());
        m
    };
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
    assert_eq!(client_address(peer, &h("1.2.3.4"), &trusted), ip("1.2.3.4"));
    assert_eq!(
        client_address(peer, &h("6.6.6.6, 1.2.3.4, 10.0.0.9"), &trusted),
        ip("1.2.3.4")
    );
    assert_eq!(
        client_address(peer, &h("garbage, 1.2.3.4"), &trusted),
        ip("1.2.3.4")
    );
    assert_eq!(
        client_address(peer, &h("1.2.3.4, garbage"), &trusted),
        ip("10.0.0.1")
    );
    assert_eq!(
        client_address(ip("5.5.5.5"), &h("1.2.3.4"), &trusted),
        ip("5.5.5.5")
    );
    assert_eq!(
        client_address(peer, &axum::http::HeaderMap::new(), &trusted),
        ip("10.0.0.1")
    );
}

/// Item 17: the revocation cache's refresh task itself (not only its
/// functions) carries another node's revocation to this node's in-memory
/// answer within seconds, and the answer came from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_refresh_task_carries_another_nodes_revocation() {
    let (a, b) = crate::helpers::spawn_pg_nodes().await;
    let (id, secret, token) = a.access_token("read").await;
    let task = agentauth::state::spawn_revocation_refresh(a.state.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !a.state.tokens.revocations.is_fresh(a.now()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh task never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(a.introspect(&token).await["active"], true);
    let r = b
        .post_form("/revoke", &[("token", &token)], Some((&id, &secret)))
        .await;
    assert_eq!(r.status, 200);
    while a.introspect(&token).await["active"] == true {
        assert!(
            std::time::Instant::now() < deadline,
            "node A never saw node B's revocation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        a.state.tokens.revocations.is_fresh(a.now()),
        "answered from memory"
    );
    task.abort();
}

/// Item 8 (the part that needs no resource registry): an MCP-style public
/// registration without grant_types gets the code flow with refresh_token;
/// a confidential one is left as it asked.
async fn scopeless_public_registration_gets_refresh_tokens(app: TestApp) {
    let reg = app
        .register(json!({
            "client_name": "MCP client",
            "redirect_uris": [crate::code_flow::REDIRECT],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    assert_eq!(
        reg["grant_types"],
        json!(["authorization_code", "refresh_token"]),
        "{reg}"
    );
    let confidential = app
        .register(json!({"redirect_uris": ["https://app.example.com/cb"]}))
        .await;
    assert_eq!(confidential["grant_types"], json!(["authorization_code"]));
}
both!(scopeless_public_registration_gets_refresh_tokens);

/// Item 13: a metadata document that declares `private_key_jwt` with a
/// `jwks_uri` and lists `token_endpoint_auth_methods_supported: ["none",
/// "private_key_jwt"]` (as a widely used MCP client does) works when the
/// client then authenticates as a public client.
#[tokio::test]
async fn metadata_document_with_several_auth_methods() {
    use crate::code_flow::{Browser, REDIRECT, document_server, refresh_token_for, user};
    let key = crate::private_key_jwt::client_key("k1");
    let base = document_server(vec![
        (
            "/client.json",
            json!({
                "client_id": "{base}/client.json",
                "client_name": "Several Methods",
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
                "jwks_uri": "{base}/jwks.json",
                "scope": "read"
            }),
            "max-age=600",
        ),
        ("/jwks.json", json!({ "keys": [key.jwk] }), "max-age=600"),
    ])
    .await;
    let mut args = serve_args();
    args.insecure_fetch = true;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    user(&app, "alice").await;
    let client_id = format!("{base}/client.json");
    // Signed in, consented, and the code exchanged as a public client.
    let rt = refresh_token_for(&app, &Browser::new(&app), &client_id).await;
    assert!(!rt.is_empty());
}

/// Item 13: a metadata document that cannot be used is a clear error that
/// says why and when it will be fetched again (`Retry-After`), at the token
/// endpoint and on the authorization error page.
#[tokio::test]
async fn refused_metadata_document_says_why_and_when() {
    use crate::code_flow::{REDIRECT, authorize_url, document_server, pkce};
    let base = document_server(vec![(
        "/wrong.json",
        json!({ "client_id": "https://elsewhere.example/client.json", "redirect_uris": [REDIRECT] }),
        "max-age=600",
    )])
    .await;
    let mut args = serve_args();
    args.insecure_fetch = true;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    let client_id = format!("{base}/wrong.json");
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("code_verifier", "y"),
                ("client_id", &client_id),
            ],
            None,
        )
        .await;
    let body = r.assert_error(401, "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("client_id does not equal its URL"),
        "{body}"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let (_, challenge) = pkce();
    let page = app.get(&authorize_url(&client_id, &challenge, &[])).await;
    assert_eq!(page.status, 400);
    assert!(page.header("location").is_none());
    assert!(String::from_utf8_lossy(&page.body).contains("fetched again in"));
}

/// Item 6: a client that retries a refresh inside the grace window (a
/// timeout, a second egress address) gets the same pair and keeps its
/// session; with the window off, the retry revokes the family as before.
async fn refresh_retry_inside_the_grace_window(app: TestApp) {
    use crate::code_flow::{Browser, public_client, refresh, refresh_token_for, user};
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let rt = refresh_token_for(&app, &Browser::new(&app), &client_id).await;
    let first = refresh(&app, &client_id, &rt, &[]).await.json();
    app.clock.advance(10);
    let again = refresh(&app, &client_id, &rt, &[]).await;
    assert_eq!(again.status, 200);
    let again = again.json();
    assert_eq!(again["refresh_token"], first["refresh_token"]);
    assert_eq!(again["access_token"], first["access_token"]);
    assert_eq!(again["expires_in"], 890, "counted from the rotation");
    let child = first["refresh_token"].as_str().unwrap();
    assert_eq!(
        refresh(&app, &client_id, child, &[]).await.status,
        200,
        "family alive"
    );
}
both!(refresh_retry_inside_the_grace_window);

#[tokio::test]
async fn refresh_grace_window_can_be_turned_off() {
    use crate::code_flow::{Browser, public_client, refresh, refresh_token_for, user};
    let mut args = serve_args();
    args.refresh_grace_period = 0;
    let app = spawn_app_with(Backend::Sqlite, args).await;
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let rt = refresh_token_for(&app, &Browser::new(&app), &client_id).await;
    let child = refresh(&app, &client_id, &rt, &[]).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    refresh(&app, &client_id, &rt, &[])
        .await
        .assert_error(400, "invalid_grant");
    refresh(&app, &client_id, &child, &[])
        .await
        .assert_error(400, "invalid_grant");
}

/// Item 5: `prompt=login` forces a fresh sign-in: following the way back
/// without signing in again leads to the login page again, not to consent.
#[tokio::test]
async fn prompt_login_forces_a_fresh_sign_in() {
    use crate::code_flow::{Browser, PASSWORD, authorize_url, location, pkce, public_client, user};
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let browser = Browser::new(&app);
    assert_eq!(browser.login("alice", PASSWORD).await.status, 303);
    app.clock.advance(100);
    let (_, challenge) = pkce();
    let r = browser
        .get(&authorize_url(
            &client_id,
            &challenge,
            &[("prompt", "login")],
        ))
        .await;
    assert_eq!(r.status, 303);
    let to_login = location(&r);
    assert!(to_login.starts_with("/login"), "{to_login}");
    let back = crate::code_flow::query_of(&to_login)["return_to"].clone();
    assert!(
        !back.contains("prompt=login") && back.contains("login_after="),
        "{back}"
    );
    // Skipping the sign-in: sent to log in again.
    let r = browser.get(&back).await;
    assert_eq!(r.status, 303);
    assert!(
        location(&r).starts_with("/login"),
        "no consent without a fresh sign-in"
    );
    // Signing in again: the request goes through.
    assert_eq!(browser.login("alice", PASSWORD).await.status, 303);
    let r = browser.get(&back).await;
    assert_eq!(r.status, 200, "consent page");
}

/// Item 13: one address may make us fetch only so many distinct metadata
/// documents per minute (cached ones are free, and a throttled address
/// does not poison the cache for others); concurrent requests for one
/// document share one fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_document_fetches_are_bounded_and_coalesced() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = {
        let hits = hits.clone();
        let base = base.clone();
        axum::Router::new().route(
            "/{name}",
            axum::routing::get(
                move |axum::extract::Path(name): axum::extract::Path<String>| {
                    let hits = hits.clone();
                    let base = base.clone();
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        // Slow enough that concurrent lookups overlap.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            json!({
                                "client_id": format!("{base}/{name}"),
                                "client_name": name,
                                "redirect_uris": [crate::code_flow::REDIRECT],
                            })
                            .to_string(),
                        )
                    }
                },
            ),
        )
    };
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut args = serve_args();
    args.insecure_fetch = true;
    args.document_fetch_rate_per_minute = 2;
    let app = Arc::new(spawn_app_with(Backend::Sqlite, args).await);

    // Twenty concurrent token requests naming one new document: one fetch.
    let first = format!("{base}/one.json");
    let statuses = crate::helpers::race(20, || {
        let app = app.clone();
        let first = first.clone();
        async move {
            app.post_form(
                "/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", &first),
                    ("code", "nope"),
                    ("code_verifier", &"v".repeat(43)),
                    ("redirect_uri", crate::code_flow::REDIRECT),
                ],
                None,
            )
            .await
            .status
            .as_u16()
        }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one fetch for one URL");

    let token_with = |client_id: String| {
        let app = app.clone();
        async move {
            app.post_form(
                "/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", &client_id),
                    ("code", "nope"),
                    ("code_verifier", &"v".repeat(43)),
                    ("redirect_uri", crate::code_flow::REDIRECT),
                ],
                None,
            )
            .await
        }
    };
    // The second distinct document is within the budget of two...
    token_with(format!("{base}/two.json"))
        .await
        .assert_error(400, "invalid_grant");
    // ...the third is not: a clear error with Retry-After, and no fetch.
    let r = token_with(format!("{base}/three.json")).await;
    let body = r.assert_error(401, "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("too many client metadata documents")
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // At /authorize too, as a page.
    let r = app
        .get(&format!(
            "/authorize?response_type=code&client_id={base}/four.json&code_challenge={}&code_challenge_method=S256",
            "a".repeat(43)
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("too many client metadata documents"));
    // Documents already fetched still work from the throttled address.
    token_with(first).await.assert_error(400, "invalid_grant");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}
