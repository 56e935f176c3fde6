//! Items 3, 9, 12 of issue 28: a kill stays killed after re-enabling, delegations are visible to their subject, removed keys stop on every node within the status interval.
//! SECURITY.md maps each case here to the attack it covers.

use std::time::{Duration, Instant};

use agentauth::store;
use serde_json::{Value, json};

use crate::agents::{Agent, agent, set_agent_active};
use crate::bridge::{EdKey, by_csr, chain, nonce};
use crate::code_flow::{
    Browser, PASSWORD, exchange, get_code_at, hidden, pkce, public_client, user,
};
use crate::helpers::{ISSUER, TestApp, TestResponse, jwt_parts};
use crate::private_key_jwt::{ClientKey, client_key};

const PASSPORT: &str = "urn:agentauth:params:grant-type:passport";
const PASSPORT_TYPE: &str = "urn:agentauth:params:token-type:passport";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const MCP: &str = "https://mcp.example.com/mcp";
const TOKEN_URL: &str = "https://auth.example.com/token";

fn ok(r: TestResponse) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn access_token(body: &Value) -> String {
    body["access_token"].as_str().unwrap().to_string()
}

async fn cc(app: &TestApp, a: &Agent) -> String {
    access_token(&ok(a
        .token(
            app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await))
}

/// Item 3: disabling an agent records a cut-off; enabling it again brings
/// back none of what it held: its access token, its passport, the token
/// another agent derived from that passport, a token bound to its bridge
/// certificate (which no longer binds), and a token a node with a stale
/// view issued just after the kill. Until the cut-off has passed its
/// grants answer 503 (what they gave would be born dead); then it gets
/// fresh tokens that work.
async fn reenabling_an_agent_brings_back_nothing(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    let b = agent(&app, "alice", "read", &[]).await;
    let at = cc(&app, &a).await;
    let passport = access_token(&ok(a
        .token(&app, &[("grant_type", PASSPORT), ("audience", &b.id)], None)
        .await));
    let derived = access_token(&ok(b
        .token(
            &app,
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &passport),
                ("subject_token_type", PASSPORT_TYPE),
                ("resource", MCP),
            ],
            None,
        )
        .await));
    let key = EdKey::new();
    ok(by_csr(&app, &a, &key.csr(Some(&nonce(&app).await)), &[]).await);
    let bound = access_token(&ok(a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            Some(&key.proof(TOKEN_URL, app.now(), None)),
        )
        .await));
    for t in [&at, &passport, &derived, &bound] {
        assert_eq!(app.introspect(t).await["active"], true);
    }

    set_agent_active(&app, &a.id, false).await;
    // A node that has not heard of the kill yet (its view of the agent is
    // up to a second old) issues once more, in the next second.
    app.clock.advance(1);
    let stale = cc(&app, &a).await;
    app.state.forget_agent(&a.id).await;
    set_agent_active(&app, &a.id, true).await;
    app.state.forget_agent(&a.id).await;
    for t in [&at, &passport, &derived, &bound, &stale] {
        assert_eq!(
            app.introspect(t).await["active"],
            false,
            "issued before the kill, alive after re-enabling: {}",
            jwt_parts(t).1
        );
    }
    let r = a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await;
    r.assert_error(503, "temporarily_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));

    app.clock.advance(1);
    // The certificate from before the kill certifies nothing now.
    a.token(
        &app,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some(&key.proof(TOKEN_URL, app.now(), None)),
    )
    .await
    .assert_error(400, "invalid_dpop_proof");
    let fresh = cc(&app, &a).await;
    assert_eq!(app.introspect(&fresh).await["active"], true);
    // A new certificate binds again.
    let body = ok(by_csr(&app, &a, &key.csr(Some(&nonce(&app).await)), &[]).await);
    assert_eq!(chain(body["access_token"].as_str().unwrap()).len(), 2);
    ok(a.token(
        &app,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some(&key.proof(TOKEN_URL, app.now(), None)),
    )
    .await);
}
crate::both!(reenabling_an_agent_brings_back_nothing);

/// Item 3: removing a key ends what the agent got while it held it, and
/// the key authenticates no more; the keys it keeps work for new tokens.
async fn removing_a_key_ends_what_was_issued_before(app: TestApp) {
    let second = client_key("second");
    let a = agent(&app, "alice", "read", std::slice::from_ref(&second.jwk)).await;
    let at = cc(&app, &a).await;
    let passport = access_token(&ok(a
        .token(
            &app,
            &[
                ("grant_type", PASSPORT),
                ("audience", "https://site.example/"),
            ],
            None,
        )
        .await));
    assert_eq!(app.introspect(&at).await["active"], true);

    let keep = agentauth::agents::check_key(&a.key.jwk).unwrap();
    agentauth::agents::set_keys(
        &app.state.db,
        app.state.grants.as_ref(),
        &a.id,
        jsonwebtoken::jwk::JwkSet { keys: vec![keep] },
        app.now(),
        "test",
    )
    .await
    .unwrap();
    app.state.forget_agent(&a.id).await;
    assert_eq!(app.introspect(&at).await["active"], false);
    assert_eq!(app.introspect(&passport).await["active"], false);
    let row = store::agents::get(&app.state.db, &a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.valid_after, app.now() + 2);

    app.clock.advance(2);
    let removed = second.assertion(json!({
        "iss": a.id, "sub": a.id, "aud": ISSUER,
        "jti": agentauth::crypto::random_id().unwrap(),
        "iat": app.now(), "exp": app.now() + 60,
    }));
    app.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &removed),
        ],
        None,
    )
    .await
    .assert_error(401, "invalid_client");
    let fresh = cc(&app, &a).await;
    assert_eq!(app.introspect(&fresh).await["active"], true);
    // Renaming nothing, removing nothing: the cut-off stays where it was.
    let events = app.audit_events_with(&["agent.keys_changed"]).await;
    assert!(events.iter().any(|e| e == "agent.keys_changed"));
}
crate::both!(removing_a_key_ends_what_was_issued_before);

/// client_credentials for `MCP`, authenticated by `key` (private_key_jwt).
async fn assert_with(app: &TestApp, agent_id: &str, key: &ClientKey) -> TestResponse {
    let assertion = key.assertion(json!({
        "iss": agent_id, "sub": agent_id, "aud": ISSUER,
        "jti": agentauth::crypto::random_id().unwrap(),
        "iat": app.now(), "exp": app.now() + 60,
    }));
    app.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("resource", MCP),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ],
        None,
    )
    .await
}

/// Item 12, across two nodes on one PostgreSQL: a key removed at A stops
/// authenticating at B within the agent-status interval (a second), not
/// the client cache's 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_stops_on_the_other_node_within_the_status_interval() {
    let (node_a, node_b) = crate::helpers::spawn_pg_nodes().await;
    let second = client_key("second");
    let a = agent(&node_a, "alice", "read", std::slice::from_ref(&second.jwk)).await;
    // B caches the agent's client row (and its keys).
    ok(assert_with(&node_b, &a.id, &second).await);

    let keep = agentauth::agents::check_key(&a.key.jwk).unwrap();
    agentauth::agents::set_keys(
        &node_a.state.db,
        node_a.state.grants.as_ref(),
        &a.id,
        jsonwebtoken::jwk::JwkSet { keys: vec![keep] },
        node_a.now(),
        "test",
    )
    .await
    .unwrap();
    node_a.state.forget_agent(&a.id).await;
    let started = Instant::now();
    assert_with(&node_a, &a.id, &second)
        .await
        .assert_error(401, "invalid_client");
    loop {
        let r = assert_with(&node_b, &a.id, &second).await;
        if r.status == 401 {
            r.assert_error(401, "invalid_client");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the removed key still authenticates at B after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A token of the signed-in `browser`'s user for `audience`, by the code
/// flow of the public client `client_id` (consenting when asked).
async fn bob_token(
    app: &TestApp,
    browser: &Browser<'_>,
    client_id: &str,
    audience: &str,
) -> String {
    let (verifier, challenge) = pkce();
    let url = crate::code_flow::authorize_url(client_id, &challenge, &[]).replace(
        &form_urlencoded::byte_serialize(MCP.as_bytes()).collect::<String>(),
        &form_urlencoded::byte_serialize(audience.as_bytes()).collect::<String>(),
    );
    let code = get_code_at(app, browser, &url).await;
    access_token(&ok(exchange(app, client_id, &code, &verifier).await))
}

/// Item 9: when another owner's agent exchanges Bob's token, Bob sees the
/// delegation on his grants page and may revoke it; withdrawing his
/// consent to the client revokes the derived token too, and so does
/// revoking the subject token at /revoke (RFC 7009).
async fn delegations_are_visible_to_their_subject(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    user(&app, "bob").await;
    let client_id = public_client(&app).await;
    let bob = Browser::new(&app);
    bob.login("bob", PASSWORD).await;
    let me = format!("{ISSUER}/agents/{}", a.id);
    let derive = |subject: String| {
        let (app, a) = (&app, &a);
        async move {
            access_token(&ok(a
                .token(
                    app,
                    &[
                        ("grant_type", EXCHANGE),
                        ("subject_token", &subject),
                        ("subject_token_type", ACCESS_TOKEN_TYPE),
                        ("resource", MCP),
                    ],
                    None,
                )
                .await))
        }
    };

    // Bob sees it, marked as another account's agent, and revokes it.
    let derived = derive(bob_token(&app, &bob, &client_id, &me).await).await;
    let jti = jwt_parts(&derived).1["jti"].as_str().unwrap().to_string();
    let page = bob.get("/account").await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        html.contains(&jti),
        "Bob does not see the delegation: {html}"
    );
    assert!(html.contains("another account"), "{html}");
    let csrf = hidden(&page, "csrf_token");
    bob.post(
        "/account/revoke",
        &[("csrf_token", &csrf), ("kind", "delegation"), ("id", &jti)],
    )
    .await;
    assert_eq!(app.introspect(&derived).await["active"], false);

    // Withdrawing the consent ends what was derived from its tokens.
    let derived = derive(bob_token(&app, &bob, &client_id, &me).await).await;
    assert_eq!(app.introspect(&derived).await["active"], true);
    let page = bob.get("/account").await;
    let csrf = hidden(&page, "csrf_token");
    bob.post(
        "/account/revoke",
        &[
            ("csrf_token", &csrf),
            ("kind", "consent"),
            ("id", &client_id),
        ],
    )
    .await;
    assert_eq!(app.introspect(&derived).await["active"], false);

    // Revoking the subject token at /revoke ends the derived one.
    let subject = bob_token(&app, &bob, &client_id, &me).await;
    let derived = derive(subject.clone()).await;
    let r = app
        .post_form(
            "/revoke",
            &[
                ("token", subject.as_str()),
                ("client_id", client_id.as_str()),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(app.introspect(&subject).await["active"], false);
    assert_eq!(app.introspect(&derived).await["active"], false);
}
crate::both!(delegations_are_visible_to_their_subject);
