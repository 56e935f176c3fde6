//! Items 8, 10, 11, 13 of issue 28: proof-of-work login needs its grant on both channels, credential changes need a recent sign-in, unauthenticated writes are rate-limited, DPoP arithmetic cannot overflow.
//! SECURITY.md maps each case here to the attack it covers.

use std::time::Duration;

use agentauth_resource::ResourceVerifier;
use agentauth_resource::dpop;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::agents::agent;
use crate::code_flow::{Browser, PASSWORD, hidden, location, user};
use crate::dpop::ProofKey;
use crate::helpers::{ISSUER, TestApp, basic, form};
use crate::login::{create_id, listen, logging_agent, outcome, poll, site};
use crate::resource::AsKeys;

const POW_LOGIN: &str = "urn:agentauth:params:grant-type:pow-login";
const MCP: &str = "https://mcp.example.com/mcp";

/// `both!` with a configuration of its own.
macro_rules! both_with {
    ($name:ident, $configure:expr) => {
        mod $name {
            fn args() -> agentauth::config::ServeArgs {
                let mut args = $crate::helpers::serve_args();
                let configure: fn(&mut agentauth::config::ServeArgs) = $configure;
                configure(&mut args);
                args
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(
                    $crate::helpers::spawn_app_with($crate::helpers::Backend::Sqlite, args()).await,
                )
                .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(
                    $crate::helpers::spawn_app_with($crate::helpers::Backend::Postgres, args())
                        .await,
                )
                .await
            }
        }
    };
}

fn id_and_secret(reg: &Value) -> (String, String) {
    (
        reg["client_id"].as_str().unwrap().to_string(),
        reg["client_secret"].as_str().unwrap().to_string(),
    )
}

// ---------------------------------------------------------------------
// Item 8: proof-of-work login.
// ---------------------------------------------------------------------

/// Creating a login request needs the pow-login grant among the client's
/// registered grant_types, and a site an operator vouched for: a vouched
/// client without the grant, and an anonymous (open /register) client
/// with it, are both `unauthorized_client` (RFC 6749 §5.2). The agent
/// reading a vouched site's request sees `site_verified: true`.
async fn creating_a_login_request_needs_the_grant_and_a_vouched_site(app: TestApp) {
    // Vouched (initial access token), but registered for another grant.
    let worker = id_and_secret(
        &app.register(json!({
            "client_name": "Worker",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await,
    );
    let r = app
        .post_form("/login-requests", &[], Some((&worker.0, &worker.1)))
        .await;
    let body = r.assert_error(400, "unauthorized_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(POW_LOGIN),
        "{body}"
    );

    // Anonymous (open registration): it may register the grant, but not
    // use it while the operator has not allowed unvouched sites.
    let anonymous = id_and_secret(
        &app.register_open(json!({
            "client_name": "Totally Your Bank",
            "grant_types": [POW_LOGIN],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await,
    );
    app.post_form("/login-requests", &[], Some((&anonymous.0, &anonymous.1)))
        .await
        .assert_error(400, "unauthorized_client");

    // A vouched site with the grant: created, and shown as verified.
    let vouched = site(&app, "Example Site").await;
    let id = create_id(&app, &vouched, &[]).await;
    let a = logging_agent(&app, "alice").await;
    let c = a.challenge(&app, &id).await;
    assert_eq!(c.status, 200, "{}", String::from_utf8_lossy(&c.body));
    let c = c.json();
    assert_eq!(c["site_verified"], true);
    assert_eq!(c["site"]["verified"], true);
    assert_eq!(c["site"]["name"], "Example Site");
    assert_eq!(c["site"]["display_name"], "Example Site");
}
crate::both!(creating_a_login_request_needs_the_grant_and_a_vouched_site);

/// With `--pow-login-unvouched`, an anonymous site may create requests,
/// and the agent sees its self-asserted name marked unverified (in the
/// JSON flag and in the name meant for people).
async fn unvouched_sites_are_marked_unverified(app: TestApp) {
    let anonymous = id_and_secret(
        &app.register_open(json!({
            "client_name": "Totally Your Bank",
            "client_uri": "https://bank.example.net/",
            "grant_types": [POW_LOGIN],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await,
    );
    let id = create_id(&app, &anonymous, &[]).await;
    let a = logging_agent(&app, "alice").await;
    let c = a.challenge(&app, &id).await;
    assert_eq!(c.status, 200, "{}", String::from_utf8_lossy(&c.body));
    let c = c.json();
    assert_eq!(c["site_verified"], false);
    assert_eq!(c["site"]["verified"], false);
    assert_eq!(c["site"]["name"], "Totally Your Bank");
    assert_eq!(c["site"]["display_name"], "Totally Your Bank (unverified)");
}
both_with!(unvouched_sites_are_marked_unverified, |args| {
    args.pow_login_unvouched = true;
});

/// Both delivery channels apply the same rule, at delivery: a site that
/// lost the grant (RFC 7592 update) after creating requests gets no
/// passport on an event stream that was already open (an `outcome` with
/// `unauthorized_client`), cannot open a new stream, and polling says
/// `unauthorized_client` too. Nothing was spent: with the grant back, the
/// passport is delivered once.
async fn both_delivery_channels_recheck_the_grant(app: TestApp) {
    let token = app.initial_token().await;
    let reg = app
        .json_request(
            "POST",
            "/register",
            &json!({
                "client_name": "Example Site",
                "grant_types": [POW_LOGIN],
                "token_endpoint_auth_method": "client_secret_basic",
            }),
            Some(&token),
        )
        .await;
    assert_eq!(reg.status, 201);
    let reg = reg.json();
    let site = id_and_secret(&reg);
    let management = reg["registration_access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let update = |grants: Value| {
        let body = json!({
            "client_id": site.0, "client_name": "Example Site", "grant_types": grants,
            "token_endpoint_auth_method": "client_secret_basic",
        });
        let path = format!("/register/{}", site.0);
        let management = management.clone();
        let app = &app;
        async move {
            let r = app
                .json_request("PUT", &path, &body, Some(&management))
                .await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
    };
    let a = logging_agent(&app, "alice").await;
    let streamed = create_id(&app, &site, &[]).await;
    let polled = create_id(&app, &site, &[]).await;
    let stream = listen(&app, &site, &streamed);
    for _ in 0..100 {
        if app.state.agents.login_hub.streams.lock().unwrap().total == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!stream.is_finished(), "the stream waits");

    update(json!(["client_credentials"])).await;
    assert_eq!(a.approve(&app, &streamed).await.status, 200);
    assert_eq!(a.approve(&app, &polled).await.status, 200);

    let (status, body) = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("the approval wakes the stream")
        .unwrap();
    assert_eq!(status, 200);
    let event = outcome(&body);
    assert_eq!(event["status"], "refused", "{event}");
    assert_eq!(event["error"], "unauthorized_client");
    assert!(event.get("passport").is_none(), "no passport: {event}");
    // A new stream is refused at once, as polling is.
    let (status, body) = listen(&app, &site, &polled).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "unauthorized_client"
    );
    poll(&app, &site, &polled)
        .await
        .assert_error(400, "unauthorized_client");

    // The grant back: the passport was not spent by the refusals.
    update(json!([POW_LOGIN])).await;
    let (_, body) = listen(&app, &site, &streamed).await.unwrap();
    assert!(outcome(&body).get("passport").is_some(), "{body}");
    let r = poll(&app, &site, &polled).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
crate::both!(both_delivery_channels_recheck_the_grant);

/// SECURITY.md, "Proof-of-work login": event streams are capped per site and per node, not
/// only per address (one address here): 429 with Retry-After beyond a
/// cap; closed streams free their slots.
async fn event_streams_are_capped_per_site_and_per_node(app: TestApp) {
    let first = site(&app, "First Site").await;
    let second = site(&app, "Second Site").await;
    let first_id = create_id(&app, &first, &[]).await;
    let second_id = create_id(&app, &second, &[]).await;
    let open = |n: u32| {
        let app = &app;
        async move {
            for _ in 0..100 {
                if app.state.agents.login_hub.streams.lock().unwrap().total == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("{n} streams never opened");
        }
    };
    let refused = |site: &(String, String), id: &str| {
        let request = Request::get(format!("/login-requests/{id}/events"))
            .header(header::AUTHORIZATION, basic(&site.0, &site.1))
            .body(Body::empty())
            .unwrap();
        let app = &app;
        async move {
            let r = app.send(request).await;
            r.assert_error(429, "slow_down");
            assert!(r.header("retry-after").is_some(), "Retry-After");
        }
    };
    let mut streams = vec![
        listen(&app, &first, &first_id),
        listen(&app, &first, &first_id),
    ];
    open(2).await;
    // The site's cap (2), while the node has room.
    refused(&first, &first_id).await;
    streams.push(listen(&app, &second, &second_id));
    open(3).await;
    // The node's cap (3), for a site below its own.
    refused(&second, &second_id).await;
    for s in &streams {
        s.abort();
    }
    for s in streams {
        let _ = s.await;
    }
    open(0).await;
    assert!(
        app.state
            .agents
            .login_hub
            .streams
            .lock()
            .unwrap()
            .by_site
            .is_empty()
    );
    let again = listen(&app, &second, &second_id);
    open(1).await;
    again.abort();
}
both_with!(event_streams_are_capped_per_site_and_per_node, |args| {
    args.login_streams = 3;
    args.login_streams_per_site = 2;
});

// ---------------------------------------------------------------------
// Item 10: credential changes need a recent sign-in.
// ---------------------------------------------------------------------

/// An attribute's value in a page (`data-csrf="…"`).
fn attr(page: &crate::helpers::TestResponse, name: &str) -> String {
    let html = String::from_utf8_lossy(&page.body);
    let marker = format!("{name}=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].to_string()
}

async fn agent_keys(app: &TestApp, id: &str) -> usize {
    agentauth::store::clients::get(&app.state.db, id)
        .await
        .unwrap()
        .unwrap()
        .metadata
        .jwks
        .map_or(0, |k| k.keys.len())
}

/// Adding a key to an agent, adding a passkey and deleting the password
/// with a live session whose sign-in is more than 5 minutes old: each
/// sends the owner to the login page (303, returning to the page) and
/// changes nothing; after signing in again, they work.
async fn credential_changes_need_a_recent_sign_in(app: TestApp) {
    user(&app, "alice").await;
    let owner_id = agentauth::store::users::by_username(&app.state.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    let helper = agent(&app, "alice", "read", &[]).await;
    // A passkey already on the account, so that the password may go.
    agentauth::store::passkeys::insert(
        &app.state.db,
        agentauth::store::passkeys::PasskeyRow {
            id: "pk-1".into(),
            user_id: owner_id,
            credential_id: vec![1, 2, 3],
            public_key: vec![0],
            alg: -7,
            sign_count: 0,
            name: "Laptop".into(),
            backup_eligible: false,
            created_at: app.now(),
            last_used_at: None,
        },
    )
    .await
    .unwrap();
    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    let agent_page = format!("/account/agents/{}", helper.id);
    let csrf = hidden(&alice.get(&agent_page).await, "csrf_token");
    let passkeys_csrf = attr(&alice.get("/account/passkeys").await, "data-csrf");

    // 5 minutes and a second later: the session lives on (12 h), but
    // credential changes want a fresh sign-in.
    app.clock
        .advance(agentauth::http::account::RECENT_SIGN_IN + 1);
    let new_key = crate::private_key_jwt::client_key("second");
    let r = alice
        .post(
            &format!("{agent_page}/add-key"),
            &[("csrf_token", &csrf), ("key", &new_key.jwk.to_string())],
        )
        .await;
    let back_to_agent = format!(
        "/login?return_to={}&reauth=1",
        form_urlencoded::byte_serialize(agent_page.as_bytes()).collect::<String>()
    );
    assert_eq!(location(&r), back_to_agent);
    assert_eq!(agent_keys(&app, &helper.id).await, 1, "no key added");

    let r = alice
        .post(
            "/passkeys/register/options",
            &[("csrf_token", &passkeys_csrf)],
        )
        .await;
    let body = r.assert_error(401, "login_required");
    assert_eq!(
        body["redirect"],
        "/login?return_to=%2Faccount%2Fpasskeys&reauth=1"
    );

    let back_to_confirm = "/login?return_to=%2Faccount%2Fpassword%2Fconfirm&reauth=1";
    assert_eq!(
        location(&alice.get("/account/password/confirm").await),
        back_to_confirm
    );
    let r = alice
        .post(
            "/account/password/remove",
            &[("csrf_token", &passkeys_csrf)],
        )
        .await;
    assert_eq!(location(&r), back_to_confirm);
    assert!(
        agentauth::store::users::by_username(&app.state.db, "alice")
            .await
            .unwrap()
            .unwrap()
            .password_hash
            != agentauth::accounts::NO_PASSWORD,
        "the password stays"
    );

    // The login page says why, and signing in again returns to the page.
    let page = alice.get(&back_to_agent).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains("Sign in again"), "{html}");
    assert_eq!(hidden(&page, "return_to"), agent_page);
    let r = alice
        .post(
            "/login",
            &[
                ("csrf_token", &hidden(&page, "csrf_token")),
                ("username", "alice"),
                ("password", PASSWORD),
                ("return_to", &agent_page),
            ],
        )
        .await;
    assert_eq!(location(&r), agent_page);
    let csrf = hidden(&alice.get(&agent_page).await, "csrf_token");
    let r = alice
        .post(
            &format!("{agent_page}/add-key"),
            &[("csrf_token", &csrf), ("key", &new_key.jwk.to_string())],
        )
        .await;
    assert_eq!(location(&r), agent_page);
    assert_eq!(agent_keys(&app, &helper.id).await, 2, "the key is added");
    let passkeys_csrf = attr(&alice.get("/account/passkeys").await, "data-csrf");
    let r = alice
        .post(
            "/passkeys/register/options",
            &[("csrf_token", &passkeys_csrf)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let confirm = alice.get("/account/password/confirm").await;
    assert_eq!(confirm.status, 200);
}
crate::both!(credential_changes_need_a_recent_sign_in);

// ---------------------------------------------------------------------
// Item 11: unauthenticated writes are rate-limited.
// ---------------------------------------------------------------------

/// `POST /passkeys/login/options` writes a challenge row per call: one
/// address gets the sign-in pages' budget (30 a minute), then 429 with
/// Retry-After, and no further row is written.
async fn passkey_login_options_are_rate_limited_per_address(app: TestApp) {
    let browser = Browser::new(&app);
    let csrf = hidden(&browser.get("/login").await, "csrf_token");
    for n in 0..30 {
        let r = browser
            .post("/passkeys/login/options", &[("csrf_token", &csrf)])
            .await;
        assert_eq!(r.status, 200, "call {n}");
    }
    let r = browser
        .post("/passkeys/login/options", &[("csrf_token", &csrf)])
        .await;
    r.assert_error(429, "slow_down");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
}
crate::both!(passkey_login_options_are_rate_limited_per_address);

// ---------------------------------------------------------------------
// Item 13: DPoP arithmetic and windows.
// ---------------------------------------------------------------------

/// A validly signed proof with `iat = i64::MIN` (or `i64::MAX`) at
/// `/token`: 400 `invalid_dpop_proof`, not a panic (the `iat` distance
/// once overflowed).
async fn dpop_iat_at_the_i64_limits_is_refused_at_token(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let key = ProofKey::new();
    for iat in [i64::MIN, i64::MAX] {
        let proof = key.sign(
            &key.header(),
            &key.claims("POST", &format!("{ISSUER}/token"), iat),
        );
        let r = app
            .send(
                Request::post("/token")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::AUTHORIZATION, basic(&id, &secret))
                    .header("DPoP", proof)
                    .body(Body::from(form(&[("grant_type", "client_credentials")])))
                    .unwrap(),
            )
            .await;
        let body = r.assert_error(400, "invalid_dpop_proof");
        assert!(
            body["error_description"].as_str().unwrap().contains("iat"),
            "{body}"
        );
    }
}
crate::both!(dpop_iat_at_the_i64_limits_is_refused_at_token);

async fn dpop_token(app: &TestApp, key: &ProofKey) -> String {
    let (id, secret) = app.cc_client("read").await;
    let r = app
        .send(
            Request::post("/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, basic(&id, &secret))
                .header("DPoP", key.proof(app))
                .body(Body::from(form(&[
                    ("grant_type", "client_credentials"),
                    ("resource", MCP),
                ])))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["access_token"].as_str().unwrap().to_string()
}

fn resource_request(key: &ProofKey, token: &str, iat: i64, jti: &str) -> HeaderMap {
    let mut claims = key.claims("GET", MCP, iat);
    claims["ath"] = json!(dpop::ath(token));
    claims["jti"] = json!(jti);
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("DPoP {token}")).unwrap(),
    );
    h.insert(
        "dpop",
        HeaderValue::from_str(&key.sign(&key.header(), &claims)).unwrap(),
    );
    h
}

/// The kit: a proof with `iat = i64::MIN` is a 401 `invalid_dpop_proof`
/// challenge, not a panic; a kit with a wider `iat_window` (450 s) keeps
/// a spent proof for all of it: a proof dated the whole window ahead is
/// still refused as a replay at the far end of the window (900 s, past
/// the old fixed 121 s; the wall-clock side is the kit's unit test
/// `replay_store_lifetime_follows_the_iat_window`).
async fn kit_dpop_iat_limits_and_replay_window(app: TestApp) {
    let key = ProofKey::new();
    let token = dpop_token(&app, &key).await;
    let now = app.now();
    let kit = ResourceVerifier::new(ISSUER, MCP, AsKeys(app.state.clone()));
    for iat in [i64::MIN, i64::MAX] {
        let err = kit
            .verify_request("GET", MCP, &resource_request(&key, &token, iat, "min"), now)
            .unwrap_err();
        let r = err.into_response();
        assert_eq!(r.status(), 401);
        let challenge = r
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            challenge.contains("error=\"invalid_dpop_proof\""),
            "{challenge}"
        );
    }

    let mut wide = ResourceVerifier::new(ISSUER, MCP, AsKeys(app.state.clone()));
    wide.iat_window = 450;
    let ahead = resource_request(&key, &token, now + 450, "ahead");
    assert!(wide.verify_request("GET", MCP, &ahead, now).is_ok());
    for later in [now + 121, now + 900] {
        let err = wide.verify_request("GET", MCP, &ahead, later).unwrap_err();
        assert_eq!(
            err,
            agentauth_resource::ResourceError::InvalidDpopProof("DPoP proof jti was already used"),
            "replayed at {later}"
        );
    }
    // The store keeps it for the proof's whole acceptance: 901 s.
    assert_eq!(
        dpop::replay_retention(now + 450, now, 450),
        Duration::from_secs(901)
    );
}
crate::both!(kit_dpop_iat_limits_and_replay_window);
