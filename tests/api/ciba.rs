//! Issue 32: an owner approves one agent action. CIBA (OpenID CIBA Core
//! 1.0: poll and ping) with RFC 9396 authorization details, answered on
//! the console's approvals page, through the real router on SQLite and
//! PostgreSQL: every error of CIBA Core §11 and §13 and of RFC 9396 §5,
//! the caps, expiry, single delivery (also across two nodes), and the
//! no-probing rule.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::agents::{Agent, agent, set_agent_active};
use crate::code_flow::{Browser, PASSWORD, user};
use crate::dpop::ProofKey;
use crate::helpers::{Backend, ISSUER, TestApp, TestResponse, jwt_parts, spawn_app_with_resources};
use crate::passkeys::{Authenticator, hidden_attr, register, with};

const CIBA: &str = "urn:openid:params:grant-type:ciba";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const MCP: &str = "https://mcp.example.com/mcp";

/// A resource that declares the `mcp_tool_call` type.
pub const RESOURCES: &str = r#"
[[resource]]
uri = "https://mcp.example.com/mcp"
name = "Notes"
scopes = ["notes"]

[[resource.authorization_details]]
type = "mcp_tool_call"
description = "One call of one tool"
render = "Call the tool {tool} with {arguments}"
fields.tool = { kind = "string", required = true, max_length = 128 }
fields.arguments = { kind = "object" }

[[resource]]
uri = "https://bearer.example.com/api"
scopes = ["notes"]
dpop = "refused"
"#;

async fn app_for(backend: Backend) -> TestApp {
    spawn_app_with_resources(backend, RESOURCES, |args| {
        args.insecure_fetch = true;
    })
    .await
}

macro_rules! ciba_case {
    ($name:ident) => {
        crate::both_with!(app_for, $name);
    };
}

fn delete_note(id: &str) -> String {
    json!([{ "type": "mcp_tool_call", "tool": "delete_note", "arguments": { "id": id } }])
        .to_string()
}

/// POSTs `/bc-authorize` as `agent`.
async fn bc(app: &TestApp, agent: &Agent, pairs: &[(&str, &str)]) -> TestResponse {
    let assertion = agent.assertion(app);
    let mut all = vec![
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion.as_str()),
    ];
    all.extend_from_slice(pairs);
    app.post_form("/bc-authorize", &all, None).await
}

/// An agent of alice's whose second key is `proof`'s (DPoP).
async fn alice_agent(app: &TestApp, proof: &ProofKey) -> Agent {
    agent(app, "alice", "notes", std::slice::from_ref(&proof.jwk)).await
}

fn started(r: &TestResponse) -> String {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    assert!(body["interval"].as_i64().unwrap() >= 1);
    body["auth_req_id"].as_str().unwrap().to_string()
}

async fn poll(app: &TestApp, agent: &Agent, id: &str, proof: Option<&ProofKey>) -> TestResponse {
    let dpop = proof.map(|p| p.proof(app));
    agent
        .token(
            app,
            &[("grant_type", CIBA), ("auth_req_id", id)],
            dpop.as_deref(),
        )
        .await
}

/// The owner's approvals page, signed in: (page, csrf).
async fn approvals(browser: &Browser<'_>) -> (TestResponse, String) {
    let page = browser.get("/account/approvals").await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    let html = String::from_utf8_lossy(&page.body).to_string();
    let marker = "name=\"csrf_token\" value=\"";
    let csrf = match html.find(marker) {
        Some(i) => {
            let s = &html[i + marker.len()..];
            s[..s.find('"').unwrap()].to_string()
        }
        None => hidden_attr(&page, "data-csrf"),
    };
    (page, csrf)
}

/// The console id of the one pending request on the page.
fn request_ids(page: &TestResponse) -> Vec<String> {
    let ids = hidden_attr(page, "data-approvals-live");
    ids.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn text(r: &TestResponse) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

/// The whole poll-mode loop: pending, slow_down, the page in words, the
/// password approval, one DPoP-bound short token carrying the details
/// (and no refresh token), then `invalid_grant` for a second delivery.
async fn poll_mode_approval_gives_one_bound_token(app: TestApp) {
    let proof = ProofKey::new();
    let a = alice_agent(&app, &proof).await;
    let id = started(
        &bc(
            &app,
            &a,
            &[
                ("login_hint", "alice"),
                ("binding_message", "Delete note n2 (code 4711)"),
                ("authorization_details", &delete_note("n2")),
                ("scope", "notes"),
            ],
        )
        .await,
    );
    poll(&app, &a, &id, Some(&proof))
        .await
        .assert_error(400, "authorization_pending");
    poll(&app, &a, &id, Some(&proof))
        .await
        .assert_error(400, "slow_down");

    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    let account = text(&alice.get("/account").await);
    assert!(
        account.contains("1 request waiting for your approval"),
        "{account}"
    );
    let (page, csrf) = approvals(&alice).await;
    let html = text(&page);
    assert!(html.contains("Delete note n2 (code 4711)"), "{html}");
    assert!(
        html.contains("Call the tool delete_note with {&quot;id&quot;:&quot;n2&quot;}"),
        "the action in words: {html}"
    );
    let ids = request_ids(&page);
    assert_eq!(ids.len(), 1);
    // A wrong password approves nothing.
    let r = alice
        .post(
            &format!("/account/approvals/{}/approve", ids[0]),
            &[("csrf_token", &csrf), ("password", "wrong")],
        )
        .await;
    assert_eq!(r.status, 401);
    let r = alice
        .post(
            &format!("/account/approvals/{}/approve", ids[0]),
            &[("csrf_token", &csrf), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", text(&r));

    // Without a proof the approved token cannot be had, and the delivery
    // is not spent by asking. (The slow_down above lengthened the
    // interval to 7 seconds.)
    app.clock.advance(10);
    poll(&app, &a, &id, None)
        .await
        .assert_error(400, "invalid_dpop_proof");
    app.clock.advance(10);
    let r = poll(&app, &a, &id, Some(&proof)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let body = r.json();
    assert_eq!(body["token_type"], "DPoP");
    assert!(body.get("refresh_token").is_none());
    assert!(body["expires_in"].as_i64().unwrap() <= 300);
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["jkt"], proof.thumbprint());
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["act"]["agent_id"], a.id);
    assert_eq!(claims["client_id"], a.id);
    assert_eq!(claims["scope"], "notes", "asked for explicitly");
    assert_eq!(
        claims["authorization_details"],
        json!([{ "type": "mcp_tool_call", "tool": "delete_note", "arguments": { "id": "n2" },
                 "locations": [MCP] }])
    );
    let alice_id = agentauth::store::users::by_username(&app.state.db, "alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    assert_eq!(claims["sub"], alice_id);
    // RFC 9396 §7: the response names the granted details too.
    assert_eq!(
        body["authorization_details"],
        claims["authorization_details"]
    );
    // RFC 9396 §9.2: introspection reports the details.
    app.set_introspects(&app.introspector().await.0.clone(), &[MCP])
        .await;
    let seen = app.introspect(body["access_token"].as_str().unwrap()).await;
    assert_eq!(seen["active"], true);
    assert_eq!(
        seen["authorization_details"],
        claims["authorization_details"]
    );

    // Delivered: said at once, however soon the client asks again.
    poll(&app, &a, &id, Some(&proof))
        .await
        .assert_error(400, "invalid_grant");
    let events = app
        .audit_events_with(&[
            "backchannel.requested",
            "backchannel.approved",
            "backchannel.delivered",
        ])
        .await;
    assert!(!events.is_empty());
}
ciba_case!(poll_mode_approval_gives_one_bound_token);

/// Denying is one click; the agent learns `access_denied`. A request
/// nobody answers ends in `expired_token`, never earlier than asked and
/// never later than the server's limit.
async fn deny_and_expiry(app: TestApp) {
    let proof = ProofKey::new();
    let a = alice_agent(&app, &proof).await;
    let denied = started(&bc(&app, &a, &[("login_hint", "alice"), ("scope", "notes")]).await);
    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    let (page, csrf) = approvals(&alice).await;
    let ids = request_ids(&page);
    let r = alice
        .post(
            &format!("/account/approvals/{}/deny", ids[0]),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 303);
    poll(&app, &a, &denied, None)
        .await
        .assert_error(400, "access_denied");
    // Answered: it cannot be answered again.
    let r = alice
        .post(
            &format!("/account/approvals/{}/approve", ids[0]),
            &[("csrf_token", &csrf), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 404);

    let r = bc(
        &app,
        &a,
        &[("login_hint", "alice"), ("requested_expiry", "60")],
    )
    .await;
    assert_eq!(r.json()["expires_in"], 60);
    let short = started(&r);
    let long = bc(
        &app,
        &a,
        &[("login_hint", "alice"), ("requested_expiry", "999999")],
    )
    .await;
    assert_eq!(long.json()["expires_in"], 300, "capped at --ciba-expiry");
    for bad in ["0", "-5", "soon", "1.5"] {
        bc(
            &app,
            &a,
            &[("login_hint", "alice"), ("requested_expiry", bad)],
        )
        .await
        .assert_error(400, "invalid_request");
    }
    app.clock.advance(59);
    poll(&app, &a, &short, None)
        .await
        .assert_error(400, "authorization_pending");
    app.clock.advance(2);
    poll(&app, &a, &short, None)
        .await
        .assert_error(400, "expired_token");
    // An expired request is gone from the page and cannot be approved.
    let (page, _) = approvals(&alice).await;
    assert_eq!(request_ids(&page).len(), 1, "only the long one is left");
}
ciba_case!(deny_and_expiry);

/// A hint that names a stranger, nobody, or a user the client may not ask
/// gets the very answer the owner's hint gets; the request reaches nobody
/// and only expires. The stranger's page shows nothing.
async fn login_hint_cannot_probe_accounts(app: TestApp) {
    let proof = ProofKey::new();
    let a = alice_agent(&app, &proof).await;
    user(&app, "bob").await;
    let shape = |r: &TestResponse| {
        let mut keys: Vec<String> = r.json().as_object().unwrap().keys().cloned().collect();
        keys.sort();
        (
            r.status,
            keys,
            r.json()["expires_in"].clone(),
            r.json()["interval"].clone(),
        )
    };
    let owner = bc(&app, &a, &[("login_hint", "alice")]).await;
    let stranger = bc(&app, &a, &[("login_hint", "bob")]).await;
    let nobody = bc(&app, &a, &[("login_hint", "no-such-user-xyz")]).await;
    assert_eq!(shape(&owner), shape(&stranger));
    assert_eq!(shape(&owner), shape(&nobody));
    let bob = Browser::new(&app);
    bob.login("bob", PASSWORD).await;
    let (page, _) = approvals(&bob).await;
    assert!(request_ids(&page).is_empty());
    let id = started(&stranger);
    poll(&app, &a, &id, None)
        .await
        .assert_error(400, "authorization_pending");
    app.clock.advance(301);
    poll(&app, &a, &id, None)
        .await
        .assert_error(400, "expired_token");
}
ciba_case!(login_hint_cannot_probe_accounts);

/// CIBA Core §13 and RFC 9396 §5 at the backchannel endpoint.
async fn request_errors(app: TestApp) {
    let proof = ProofKey::new();
    let a = alice_agent(&app, &proof).await;
    let hint = ("login_hint", "alice");
    let long = "x".repeat(101);
    let note = delete_note("n1");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "invalid_request"),
        (vec![hint, ("login_hint_token", "x")], "invalid_request"),
        (vec![("id_token_hint", "x")], "invalid_request"),
        (vec![hint, ("user_code", "1234")], "invalid_request"),
        (vec![hint, ("request", "eyJ.x.y")], "invalid_request"),
        (
            vec![hint, ("binding_message", "   ")],
            "invalid_binding_message",
        ),
        (
            vec![hint, ("binding_message", &long)],
            "invalid_binding_message",
        ),
        (
            vec![hint, ("binding_message", "pay\nbob")],
            "invalid_binding_message",
        ),
        (
            vec![hint, ("binding_message", "pay \u{202E}bob")],
            "invalid_binding_message",
        ),
        (
            vec![hint, ("binding_message", "pay\u{200B}bob")],
            "invalid_binding_message",
        ),
        (vec![hint, ("scope", "admin")], "invalid_scope"),
        (
            vec![hint, ("resource", "https://evil.example/")],
            "invalid_target",
        ),
        (
            vec![hint, ("authorization_details", "{}")],
            "invalid_authorization_details",
        ),
        (
            vec![hint, ("authorization_details", "[{\"type\":\"payment\"}]")],
            "invalid_authorization_details",
        ),
        (
            vec![
                hint,
                ("authorization_details", "[{\"type\":\"mcp_tool_call\"}]"),
            ],
            "invalid_authorization_details",
        ),
        (
            vec![
                hint,
                (
                    "authorization_details",
                    "[{\"type\":\"mcp_tool_call\",\"tool\":\"x\",\"secret\":1}]",
                ),
            ],
            "invalid_authorization_details",
        ),
        (
            vec![
                hint,
                (
                    "authorization_details",
                    "[{\"type\":\"mcp_tool_call\",\"tool\":\"x\",\"locations\":[\"https://bearer.example.com/api\"]}]",
                ),
            ],
            "invalid_authorization_details",
        ),
        (
            vec![
                hint,
                ("resource", "https://bearer.example.com/api"),
                ("authorization_details", &note),
            ],
            "invalid_authorization_details",
        ),
    ];
    for (pairs, error) in cases {
        let r = bc(&app, &a, &pairs).await;
        assert_eq!(r.status, 400, "{pairs:?}: {}", text(&r));
        r.assert_error(400, error);
        assert!(
            r.header("cache-control")
                .is_some_and(|v| v.contains("no-store"))
        );
    }
    // A good binding message in any script is fine.
    started(
        &bc(
            &app,
            &a,
            &[hint, ("binding_message", "Löschen: Notiz n2 — 削除")],
        )
        .await,
    );

    // invalid_client: no or bad credentials.
    app.post_form("/bc-authorize", &[hint], None)
        .await
        .assert_error(401, "invalid_client");
    // unauthorized_client: a client not registered for the grant.
    let reg = app
        .register(json!({
            "client_name": "Worker", "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await;
    let (id, secret) = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    app.post_form("/bc-authorize", &[hint], Some((id, secret)))
        .await
        .assert_error(400, "unauthorized_client");
    // A killed agent asks nobody.
    set_agent_active(&app, &a.id, false).await;
    app.state.agents.forget(&a.id).await;
    bc(&app, &a, &[hint])
        .await
        .assert_error(401, "invalid_client");

    // §11 at the token endpoint: an unknown auth_req_id, or another
    // client's.
    let b = alice_agent(&app, &proof).await;
    poll(&app, &b, "not-a-request", None)
        .await
        .assert_error(400, "invalid_grant");
    let id_b = started(&bc(&app, &b, &[hint]).await);
    let c = alice_agent(&app, &proof).await;
    poll(&app, &c, &id_b, None)
        .await
        .assert_error(400, "invalid_grant");
    // A public client cannot register the grant.
    let r = app
        .json_request(
            "POST",
            "/register",
            &json!({ "grant_types": [CIBA], "token_endpoint_auth_method": "none" }),
            Some(&app.initial_token().await),
        )
        .await;
    r.assert_error(400, "invalid_client_metadata");
}
ciba_case!(request_errors);

/// Pending requests are capped per client and per owner (429 with
/// Retry-After); an answered request frees its place.
async fn pending_requests_are_capped(app: TestApp) {
    let proof = ProofKey::new();
    let a = alice_agent(&app, &proof).await;
    for _ in 0..5 {
        started(&bc(&app, &a, &[("login_hint", "alice")]).await);
    }
    let r = bc(&app, &a, &[("login_hint", "alice")]).await;
    r.assert_error(429, "slow_down");
    assert!(r.header("retry-after").is_some());
    // Dark requests count for the client too.
    let r = bc(&app, &a, &[("login_hint", "nobody-here")]).await;
    assert_eq!(r.status, 429);
    // Four more agents of alice's fill her cap of 20.
    for _ in 0..3 {
        let other = alice_agent(&app, &proof).await;
        for _ in 0..5 {
            started(&bc(&app, &other, &[("login_hint", "alice")]).await);
        }
    }
    let last = alice_agent(&app, &proof).await;
    let r = bc(&app, &last, &[("login_hint", "alice")]).await;
    r.assert_error(429, "slow_down");
    assert!(text(&r).contains("owner"));
    // Once they expire, room again.
    app.clock.advance(301);
    started(&bc(&app, &last, &[("login_hint", "alice")]).await);
}
ciba_case!(pending_requests_are_capped);

/// With a passkey, approving takes a user-verified assertion whose
/// challenge is bound to the very request; the password no longer does,
/// and a ceremony started for one request cannot approve another.
async fn passkey_approval_is_bound_to_the_request(app: TestApp) {
    let proof = ProofKey::new();
    let a = alice_agent(&app, &proof).await;
    let first = started(&bc(&app, &a, &[("login_hint", "alice")]).await);
    started(&bc(&app, &a, &[("login_hint", "alice")]).await);
    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    let mut authenticator = Authenticator::new();
    register(&alice, &mut authenticator, "laptop").await;
    let (page, csrf) = approvals(&alice).await;
    let html = text(&page);
    assert!(html.contains("data-passkey=\"approve\""), "{html}");
    assert!(!html.contains("type=\"password\""));
    let ids = request_ids(&page);
    assert_eq!(ids.len(), 2);

    let r = alice
        .post(
            &format!("/account/approvals/{}/approve", ids[0]),
            &[("csrf_token", &csrf), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 400, "the password is not enough: {}", text(&r));

    // A ceremony for request 0, answered at request 1: refused.
    let options = alice
        .post(
            &format!("/account/approvals/{}/options", ids[0]),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(options.status, 200, "{}", text(&options));
    assert_eq!(options.json()["publicKey"]["userVerification"], "required");
    let fields = authenticator.get(&options.json(), ISSUER);
    let r = alice
        .post(
            &format!("/account/approvals/{}/approve", ids[1]),
            &with(&fields, &[("csrf_token", &csrf)]),
        )
        .await;
    assert_eq!(r.status, 400, "{}", text(&r));

    let options = alice
        .post(
            &format!("/account/approvals/{}/options", ids[0]),
            &[("csrf_token", &csrf)],
        )
        .await;
    let fields = authenticator.get(&options.json(), ISSUER);
    let r = alice
        .post(
            &format!("/account/approvals/{}/approve", ids[0]),
            &with(&fields, &[("csrf_token", &csrf)]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["redirect"], "/account/approvals");
    let r = poll(&app, &a, &first, None).await;
    assert_eq!(r.status, 200, "{}", text(&r));

    // Without the CSRF token nothing happens.
    let r = alice
        .post(&format!("/account/approvals/{}/deny", ids[1]), &[])
        .await;
    assert_eq!(r.status, 403);
    // Another owner cannot see or answer it.
    user(&app, "mallory").await;
    let mallory = Browser::new(&app);
    mallory.login("mallory", PASSWORD).await;
    let (_, m_csrf) = approvals(&mallory).await;
    let r = mallory
        .post(
            &format!("/account/approvals/{}/deny", ids[1]),
            &[("csrf_token", &m_csrf)],
        )
        .await;
    assert_eq!(r.status, 404);
}
ciba_case!(passkey_approval_is_bound_to_the_request);

/// An open approvals page hears a new request at once (server-sent
/// events), and hears it answered.
async fn approvals_page_is_live(app: TestApp) {
    let proof = ProofKey::new();
    let a = alice_agent(&app, &proof).await;
    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    let response = app
        .router
        .clone()
        .oneshot(
            Request::get("/account/approvals/events")
                .header(header::COOKIE, alice.cookie_header())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = next_event(&mut body).await;
    assert!(first.contains("event: pending"), "{first:?}");
    assert!(
        !first.contains("data: ") || first.contains("data: \n"),
        "none pending yet: {first:?}"
    );
    started(&bc(&app, &a, &[("login_hint", "alice")]).await);
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), next_event(&mut body))
        .await
        .expect("the new request arrives within seconds");
    assert!(next.contains("event: pending"), "{next}");
    let (page, csrf) = approvals(&alice).await;
    let ids = request_ids(&page);
    assert!(next.contains(&ids[0]), "{next}");
    alice
        .post(
            &format!("/account/approvals/{}/deny", ids[0]),
            &[("csrf_token", &csrf)],
        )
        .await;
    let answered = tokio::time::timeout(std::time::Duration::from_secs(5), next_event(&mut body))
        .await
        .expect("the answer arrives within seconds");
    assert!(!answered.contains(&ids[0]), "{answered}");
}

/// The next server-sent event of a stream (comments skipped).
async fn next_event(body: &mut Body) -> String {
    use http_body_util::BodyExt as _;
    let mut buffer = String::new();
    loop {
        let frame = body.frame().await.expect("the stream goes on").unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.push_str(&String::from_utf8_lossy(&data));
        }
        if let Some(end) = buffer.find("\n\n") {
            let event = buffer[..end + 2].to_string();
            if event.lines().all(|l| l.starts_with(':') || l.is_empty()) {
                buffer.drain(..end + 2);
                continue;
            }
            return event;
        }
    }
}
ciba_case!(approvals_page_is_live);

/// Ping mode (CIBA Core §10.2): a confidential client the owner signed in
/// to before registers a notification endpoint; the answer pings it with
/// the `auth_req_id` and the client's bearer token, once; then one token
/// request delivers.
async fn ping_mode_notifies_once(app: TestApp) {
    type Pings = Arc<Mutex<Vec<(Option<String>, Value)>>>;
    let received: Pings = Arc::default();
    let seen = received.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let notify = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                seen.lock()
                    .unwrap()
                    .push((auth, serde_json::from_str(&body).unwrap_or(Value::Null)));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, notify).await });

    // Refused shapes first.
    for (metadata, _why) in [
        (
            json!({ "grant_types": [CIBA], "backchannel_token_delivery_mode": "push",
                 "backchannel_client_notification_endpoint": "https://c.example/cb" }),
            "push",
        ),
        (
            json!({ "grant_types": [CIBA], "backchannel_token_delivery_mode": "ping" }),
            "no endpoint",
        ),
        (
            json!({ "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll",
                 "backchannel_client_notification_endpoint": "https://c.example/cb" }),
            "poll with endpoint",
        ),
        (
            json!({ "grant_types": ["client_credentials"], "backchannel_token_delivery_mode": "poll" }),
            "no grant",
        ),
        (
            json!({ "grant_types": [CIBA], "backchannel_user_code_parameter": true }),
            "user code",
        ),
    ] {
        let r = app
            .json_request(
                "POST",
                "/register",
                &metadata,
                Some(&app.initial_token().await),
            )
            .await;
        r.assert_error(400, "invalid_client_metadata");
    }
    let reg = app
        .register(json!({
            "client_name": "Pinged", "grant_types": [CIBA],
            "token_endpoint_auth_method": "client_secret_basic",
            "backchannel_token_delivery_mode": "ping",
            "backchannel_client_notification_endpoint": format!("http://127.0.0.1:{port}/cb"),
            "scope": "notes",
        }))
        .await;
    assert_eq!(reg["backchannel_token_delivery_mode"], "ping");
    let (id, secret) = (
        reg["client_id"].as_str().unwrap().to_string(),
        reg["client_secret"].as_str().unwrap().to_string(),
    );
    user(&app, "carol").await;
    let carol_id = agentauth::store::users::by_username(&app.state.db, "carol")
        .await
        .unwrap()
        .unwrap()
        .id;
    let ask = |token: Option<&'static str>| {
        let mut pairs = vec![("login_hint", "carol"), ("scope", "notes")];
        if let Some(t) = token {
            pairs.push(("client_notification_token", t));
        }
        pairs
    };
    // Without a consent the request is dark, like any stranger's.
    let dark = app
        .post_form(
            "/bc-authorize",
            &ask(Some("tok-123456789")),
            Some((&id, &secret)),
        )
        .await;
    started(&dark);
    agentauth::store::grants::save_consent(
        &app.state.db,
        agentauth::store::grants::ConsentRow {
            user_id: carol_id.clone(),
            client_id: id.clone(),
            scope: "notes".into(),
            resources: json!([MCP]),
            granted_at: app.now(),
        },
    )
    .await
    .unwrap();
    app.post_form("/bc-authorize", &ask(None), Some((&id, &secret)))
        .await
        .assert_error(400, "invalid_request");
    app.post_form(
        "/bc-authorize",
        &ask(Some("bad token with spaces")),
        Some((&id, &secret)),
    )
    .await
    .assert_error(400, "invalid_request");
    let auth_req_id = started(
        &app.post_form(
            "/bc-authorize",
            &ask(Some("tok-123456789")),
            Some((&id, &secret)),
        )
        .await,
    );
    let carol = Browser::new(&app);
    carol.login("carol", PASSWORD).await;
    let (page, csrf) = approvals(&carol).await;
    let ids = request_ids(&page);
    assert_eq!(
        ids.len(),
        1,
        "only the request after the consent reaches carol"
    );
    let r = carol
        .post(
            &format!("/account/approvals/{}/approve", ids[0]),
            &[("csrf_token", &csrf), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while received.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    {
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.as_deref(), Some("Bearer tok-123456789"));
        assert_eq!(got[0].1, json!({ "auth_req_id": auth_req_id }));
    }
    let r = app
        .post_form(
            "/token",
            &[("grant_type", CIBA), ("auth_req_id", &auth_req_id)],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let (_, claims) = jwt_parts(r.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], carol_id);
    assert!(claims.get("act").is_none());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(received.lock().unwrap().len(), 1, "one ping");
}
ciba_case!(ping_mode_notifies_once);

/// Metadata names the endpoint, the modes and the declared types.
async fn metadata_names_ciba_and_types(app: TestApp) {
    let m = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    assert_eq!(
        m["backchannel_authentication_endpoint"],
        format!("{ISSUER}/bc-authorize")
    );
    assert_eq!(
        m["backchannel_token_delivery_modes_supported"],
        json!(["poll", "ping"])
    );
    assert_eq!(m["backchannel_user_code_parameter_supported"], false);
    assert_eq!(
        m["authorization_details_types_supported"],
        json!(["mcp_tool_call"])
    );
    assert!(
        m["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(CIBA))
    );
}
ciba_case!(metadata_names_ciba_and_types);

/// Two nodes on one PostgreSQL database: pollers racing on both get the
/// token exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_is_once_across_nodes() {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(RESOURCES.as_bytes()).unwrap();
    let path = file.path().to_path_buf();
    let (one, two) = crate::helpers::spawn_pg_nodes_with(|args| {
        args.resources = Vec::new();
        args.resources_file = Some(path.clone());
    })
    .await;
    let proof = ProofKey::new();
    let a = alice_agent(&one, &proof).await;
    let id = started(&bc(&one, &a, &[("login_hint", "alice")]).await);
    let alice = Browser::new(&two);
    alice.login("alice", PASSWORD).await;
    let (page, csrf) = approvals(&alice).await;
    let ids = request_ids(&page);
    assert_eq!(ids.len(), 1, "node two sees what node one took");
    let r = alice
        .post(
            &format!("/account/approvals/{}/approve", ids[0]),
            &[("csrf_token", &csrf), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303);
    let mut statuses = Vec::new();
    for round in 0..3 {
        let (x, y) = tokio::join!(poll(&one, &a, &id, None), poll(&two, &a, &id, None));
        statuses.push((round, x.status, y.status));
        one.clock.advance(10);
    }
    let delivered = statuses
        .iter()
        .map(|(_, x, y)| usize::from(*x == 200) + usize::from(*y == 200))
        .sum::<usize>();
    assert_eq!(delivered, 1, "{statuses:?}");
}

/// RFC 9396 at the authorization endpoint: the consent page shows the
/// action in words (and no "outlives your session": no refresh token);
/// the token carries the details and is short; a saved consent never
/// approves details by itself; bad details go back to the client as
/// `invalid_authorization_details`.
async fn details_in_the_code_flow(app: TestApp) {
    use crate::code_flow::{REDIRECT, hidden, location, pkce, query_of};
    use crate::helpers::form;
    user(&app, "alice").await;
    let reg = app
        .register(json!({
            "client_name": "Notes app", "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "scope": "notes",
        }))
        .await;
    let client_id = reg["client_id"].as_str().unwrap();
    let url = |challenge: &str, details: &str| {
        format!(
            "/authorize?{}",
            form(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("scope", "notes"),
                ("state", "xyz"),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("authorization_details", details),
            ])
        )
    };
    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    for round in 0..2 {
        let (verifier, challenge) = pkce();
        let page = alice.get(&url(&challenge, &delete_note("n3"))).await;
        assert_eq!(
            page.status,
            200,
            "round {round}: consent every time: {}",
            text(&page)
        );
        let html = text(&page);
        assert!(
            html.contains("Call the tool delete_note with {&quot;id&quot;:&quot;n3&quot;}"),
            "{html}"
        );
        assert!(
            !html.contains("id=\"offline\""),
            "no refresh token, so no such promise"
        );
        let r = alice
            .post(
                "/authorize/decision",
                &[
                    ("csrf_token", &hidden(&page, "csrf_token")),
                    ("request", &hidden(&page, "request")),
                    ("decision", "approve"),
                ],
            )
            .await;
        let code = query_of(&location(&r))["code"].clone();
        let r = crate::code_flow::exchange(&app, client_id, &code, &verifier).await;
        assert_eq!(r.status, 200, "{}", text(&r));
        let body = r.json();
        assert!(body.get("refresh_token").is_none());
        assert!(body["expires_in"].as_i64().unwrap() <= 300);
        let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
        assert_eq!(claims["authorization_details"][0]["tool"], "delete_note");
        assert_eq!(
            claims["authorization_details"][0]["locations"],
            json!([MCP])
        );
        assert_eq!(claims["aud"], MCP, "the details' location is the audience");
        assert_eq!(
            body["authorization_details"],
            claims["authorization_details"]
        );
    }
    let (_, challenge) = pkce();
    for bad in [
        "[{\"type\":\"payment\"}]",
        "not json",
        "[{\"type\":\"mcp_tool_call\"}]",
    ] {
        let r = alice.get(&url(&challenge, bad)).await;
        assert_eq!(r.status, 303, "{}", text(&r));
        let q = query_of(&location(&r));
        assert_eq!(q["error"], "invalid_authorization_details", "{bad}");
        assert_eq!(q["state"], "xyz");
    }
}
ciba_case!(details_in_the_code_flow);

/// RFC 9396 in token exchange: an approval token passes its details on
/// (whole or narrowed, DPoP-bound, no longer-lived); wider or made-up
/// details are `invalid_authorization_details`.
async fn details_in_token_exchange(app: TestApp) {
    const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
    const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
    let proof = ProofKey::new();
    let a = alice_agent(&app, &proof).await;
    let id = started(
        &bc(
            &app,
            &a,
            &[
                ("login_hint", "alice"),
                ("authorization_details", &delete_note("n1")),
            ],
        )
        .await,
    );
    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    let (page, csrf) = approvals(&alice).await;
    let ids = request_ids(&page);
    alice
        .post(
            &format!("/account/approvals/{}/approve", ids[0]),
            &[("csrf_token", &csrf), ("password", PASSWORD)],
        )
        .await;
    let approved = poll(&app, &a, &id, Some(&proof)).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // The agent trades its own approval token (RFC 8693: a token issued
    // to it), as it would to narrow it or to hand it on.
    let helper_key = &proof;
    let helper = &a;
    let trade = |details: Option<String>, with_proof: bool| {
        let approved = approved.clone();
        let app = &app;
        async move {
            let mut pairs = vec![
                ("grant_type", EXCHANGE),
                ("subject_token", approved.as_str()),
                ("subject_token_type", AT),
            ];
            if let Some(d) = details.as_deref() {
                pairs.push(("authorization_details", d));
            }
            let dpop = with_proof.then(|| helper_key.proof(app));
            helper.token(app, &pairs, dpop.as_deref()).await
        }
    };
    trade(None, false)
        .await
        .assert_error(400, "invalid_dpop_proof");
    trade(Some(delete_note("n2")), true)
        .await
        .assert_error(400, "invalid_authorization_details");
    let r = trade(Some(delete_note("n1")), true).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = trade(None, true).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let (_, claims) = jwt_parts(r.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["authorization_details"][0]["arguments"]["id"], "n1");
    assert!(
        claims.get("scope").is_none(),
        "details and no scope asked: no scope"
    );
    assert!(r.json()["expires_in"].as_i64().unwrap() <= 300);
    // An ordinary token cannot be turned into an approval.
    let ordinary = a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await;
    assert_eq!(ordinary.status, 200, "{}", text(&ordinary));
    let t = ordinary.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    helper
        .token(
            &app,
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", t.as_str()),
                ("subject_token_type", AT),
                ("authorization_details", delete_note("n1").as_str()),
            ],
            Some(&helper_key.proof(&app)),
        )
        .await
        .assert_error(400, "invalid_authorization_details");
}
ciba_case!(details_in_token_exchange);
