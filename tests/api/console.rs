//! The owner's console, agents part (issue 17 item 2), through the real
//! router: an owner lists and reads their agents and flips the kill
//! switch through a confirmation page with a CSRF token; the switch bites
//! at the token endpoint and at introspection at once; another owner gets
//! 403 and changes nothing; pages cannot be framed.

use crate::agents::agent;
use crate::both;
use crate::code_flow::{Browser, PASSWORD, hidden, location, user};
use crate::helpers::TestApp;

const MCP: &str = "https://mcp.example.com/mcp";

async fn agents_page_kill_switch_and_strangers(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    let token_now = || async {
        a.token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await
    };
    let token = token_now().await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    // Not signed in: to the login page, back here afterwards.
    let anonymous = Browser::new(&app);
    let r = anonymous.get("/account/agents").await;
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), "/login?return_to=%2Faccount%2Fagents");

    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    let list = alice.get("/account/agents").await;
    assert_eq!(list.status, 200);
    let html = String::from_utf8_lossy(&list.body).to_string();
    assert!(
        html.contains(&a.id) && html.contains("alice&#x27;s helper"),
        "{html}"
    );
    assert_eq!(list.header("x-frame-options"), Some("DENY"));
    assert!(
        list.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );

    let page = alice.get(&format!("/account/agents/{}", a.id)).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        html.contains("EC P-256") && html.contains("agent.created"),
        "{html}"
    );

    // The confirmation page carries the CSRF token; a post without it, or
    // with another, changes nothing.
    let confirm = alice
        .get(&format!("/account/agents/{}/confirm?action=disable", a.id))
        .await;
    assert_eq!(confirm.status, 200);
    let csrf = hidden(&confirm, "csrf_token");
    let disable = format!("/account/agents/{}/disable", a.id);
    assert_eq!(alice.post(&disable, &[]).await.status, 403);
    assert_eq!(
        alice
            .post(&disable, &[("csrf_token", "forged")])
            .await
            .status,
        403
    );
    assert!(app.state.agents.is_active(&a.id).await.unwrap());

    // Another owner: 403 on every page and action, nothing changes.
    user(&app, "bob").await;
    let bob = Browser::new(&app);
    bob.login("bob", PASSWORD).await;
    let bob_list = bob.get("/account/agents").await;
    assert!(!String::from_utf8_lossy(&bob_list.body).contains(&a.id));
    let refused = bob.get(&format!("/account/agents/{}", a.id)).await;
    assert_eq!(refused.status, 403);
    // A person gets a page saying why, not JSON; it cannot be framed.
    assert_eq!(
        refused.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(refused.header("x-frame-options"), Some("DENY"));
    assert!(String::from_utf8_lossy(&refused.body).contains("this agent is not yours"));
    assert_eq!(
        bob.get(&format!("/account/agents/{}/confirm?action=delete", a.id))
            .await
            .status,
        403
    );
    let bob_csrf = hidden(&bob.get("/account").await, "csrf_token");
    assert_eq!(
        bob.post(&disable, &[("csrf_token", &bob_csrf)])
            .await
            .status,
        403
    );
    assert!(app.state.agents.is_active(&a.id).await.unwrap());
    assert_eq!(bob.get("/account/agents/agent-nobody").await.status, 404);

    // Alice confirms: the agent is disabled; its token is inactive and its
    // next grant refused, at once.
    let r = alice.post(&disable, &[("csrf_token", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), format!("/account/agents/{}", a.id));
    assert_eq!(app.introspect(&token).await["active"], false);
    token_now().await.assert_error(401, "invalid_client");
    let page = alice.get(&format!("/account/agents/{}", a.id)).await;
    assert!(String::from_utf8_lossy(&page.body).contains("<strong>disabled</strong>"));

    // Enable, then delete.
    let csrf = hidden(
        &alice
            .get(&format!("/account/agents/{}/confirm?action=enable", a.id))
            .await,
        "csrf_token",
    );
    alice
        .post(
            &format!("/account/agents/{}/enable", a.id),
            &[("csrf_token", &csrf)],
        )
        .await;
    // Within the second of the cut-off its grants wait (what they gave
    // would be born dead); once the cut-off has passed it gets tokens again, and the
    // one from before the kill stays dead (SECURITY.md, "Kill, then
    // re-enable").
    token_now()
        .await
        .assert_error(503, "temporarily_unavailable");
    app.clock.advance(2);
    assert_eq!(token_now().await.status, 200);
    assert_eq!(app.introspect(&token).await["active"], false);
    let csrf = hidden(
        &alice
            .get(&format!("/account/agents/{}/confirm?action=delete", a.id))
            .await,
        "csrf_token",
    );
    let r = alice
        .post(
            &format!("/account/agents/{}/delete", a.id),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(location(&r), "/account/agents");
    assert_eq!(
        alice.get(&format!("/account/agents/{}", a.id)).await.status,
        404
    );
    token_now().await.assert_error(401, "invalid_client");
    let events = app
        .audit_events_with(&["agent.disabled", "agent.enabled", "agent.deleted"])
        .await;
    assert!(events.contains(&"agent.deleted".to_string()));
    // An unknown action.
    assert_eq!(
        alice
            .get("/account/agents/x/confirm?action=explode")
            .await
            .status,
        404
    );
}
both!(agents_page_kill_switch_and_strangers);

/// An owner creates an agent in the browser with a pasted PEM key, and a
/// script uses it at once (a passport, with private_key_jwt; it may not
/// use client_credentials where the operator did not allow agents made in
/// the console, issue 28 item 2);
/// the owner adds a second key as a JWK; bad keys are refused on the page
/// with the reason; a stranger cannot add keys.
async fn agents_are_created_and_keyed_in_the_browser(app: TestApp) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;
    user(&app, "alice").await;
    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    let form = alice.get("/account/agents/new").await;
    assert_eq!(form.status, 200);
    let csrf = hidden(&form, "csrf_token");

    // Refused: a key that is not Ed25519 or P-256, and no key at all.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    for key in [p384.public_key_pem(), "hello".to_string()] {
        let r = alice
            .post(
                "/account/agents",
                &[
                    ("csrf_token", &csrf),
                    ("name", "deployer"),
                    ("scope", "read"),
                    ("key", &key),
                ],
            )
            .await;
        assert_eq!(r.status, 400);
        let html = String::from_utf8_lossy(&r.body).to_string();
        assert!(
            html.contains("role=\"alert\"") && html.contains("deployer"),
            "{html}"
        );
    }
    // Without the CSRF token.
    let key = crate::bridge::EdKey::new();
    let pem = key.pair.public_key_pem();
    let r = alice
        .post("/account/agents", &[("name", "deployer"), ("key", &pem)])
        .await;
    assert_eq!(r.status, 403);

    let r = alice
        .post(
            "/account/agents",
            &[
                ("csrf_token", &csrf),
                ("name", "deployer"),
                ("scope", "read"),
                ("key", &pem),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let id = location(&r)
        .trim_start_matches("/account/agents/")
        .to_string();

    // A script uses the new agent with the key's private half.
    let assertion = |kid: &str, encoding: &EncodingKey, alg: Algorithm| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(
            &header,
            &json!({ "iss": id, "sub": id, "aud": crate::helpers::ISSUER,
                     "jti": agentauth::crypto::random_id().unwrap(),
                     "iat": app.now(), "exp": app.now() + 60 }),
            encoding,
        )
        .unwrap()
    };
    let app = &app;
    let grant = |grant_type: &'static str, a: String| async move {
        app.post_form(
            "/token",
            &[
                ("grant_type", grant_type),
                ("resource", MCP),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &a),
            ],
            None,
        )
        .await
    };
    let token = |a: String| grant("urn:agentauth:params:grant-type:passport", a);
    let ed = EncodingKey::from_ed_der(&key.pair.serialize_der());
    let r = token(assertion(&key.jkt(), &ed, Algorithm::EdDSA)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    grant(
        "client_credentials",
        assertion(&key.jkt(), &ed, Algorithm::EdDSA),
    )
    .await
    .assert_error(400, "unauthorized_client");

    // A second key, as a JWK, from the agent's page.
    let page = alice.get(&format!("/account/agents/{id}")).await;
    let csrf = hidden(&page, "csrf_token");
    let second = crate::private_key_jwt::client_key("second");
    let r = alice
        .post(
            &format!("/account/agents/{id}/add-key"),
            &[("csrf_token", &csrf), ("key", &second.jwk.to_string())],
        )
        .await;
    assert_eq!(r.status, 303);
    let r = token(
        second.assertion(json!({ "iss": id, "sub": id, "aud": crate::helpers::ISSUER,
        "jti": "second-1", "iat": app.now(), "exp": app.now() + 60 })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Unknown or missing actions: a 400 page, nothing changes.
    for path in [
        format!("/account/agents/{id}/confirm?action=explode"),
        format!("/account/agents/{id}/confirm"),
    ] {
        let r = alice.get(&path).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    }
    let r = alice
        .post(
            &format!("/account/agents/{id}/explode"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 400);
    // The same key twice is refused; a stranger may not add one.
    let r = alice
        .post(
            &format!("/account/agents/{id}/add-key"),
            &[("csrf_token", &csrf), ("key", &second.jwk.to_string())],
        )
        .await;
    assert_eq!(r.status, 400);
    user(app, "mallory").await;
    let mallory = Browser::new(app);
    mallory.login("mallory", PASSWORD).await;
    let m_csrf = hidden(&mallory.get("/account").await, "csrf_token");
    let r = mallory
        .post(
            &format!("/account/agents/{id}/add-key"),
            &[("csrf_token", &m_csrf), ("key", &pem)],
        )
        .await;
    assert_eq!(r.status, 403);
}
both!(agents_are_created_and_keyed_in_the_browser);

/// Operator pages (issue 17 item 4): for admins only (403 otherwise, the
/// login page when signed out); clients without secrets, signing keys
/// and CA epochs, and the audit log filtered and paged.
async fn operator_pages_are_for_operators(app: TestApp) {
    use agentauth::store;
    let (client_id, client_secret) = app.cc_client("read").await;
    user(&app, "root").await;
    user(&app, "alice").await;
    let root = store::users::by_username(&app.state.db, "root")
        .await
        .unwrap()
        .unwrap();
    assert!(
        store::users::set_admin(&app.state.db, &root.id, true)
            .await
            .unwrap()
    );

    let anonymous = Browser::new(&app);
    let r = anonymous.get("/admin/audit").await;
    assert_eq!(location(&r), "/login?return_to=%2Fadmin%2Faudit");
    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;
    for page in ["/admin/clients", "/admin/keys", "/admin/audit"] {
        assert_eq!(alice.get(page).await.status, 403, "{page}");
    }
    assert!(!String::from_utf8_lossy(&alice.get("/account").await.body).contains("/admin/"));

    let op = Browser::new(&app);
    op.login("root", PASSWORD).await;
    assert!(String::from_utf8_lossy(&op.get("/account").await.body).contains("/admin/clients"));
    let clients = op.get("/admin/clients").await;
    assert_eq!(
        clients.status,
        200,
        "{}",
        String::from_utf8_lossy(&clients.body)
    );
    assert_eq!(clients.header("x-frame-options"), Some("DENY"));
    let html = String::from_utf8_lossy(&clients.body).to_string();
    assert!(html.contains(&client_id) && !html.contains(&client_secret));

    let keys = op.get("/admin/keys").await;
    let html = String::from_utf8_lossy(&keys.body).to_string();
    let kid = store::keys::list(&app.state.db).await.unwrap()[0]
        .kid
        .clone();
    assert!(html.contains(&kid) && html.contains("CA epochs"), "{html}");

    // 55 events of one kind: a page of 50, then the older 5.
    let events: Vec<_> = (0..55)
        .map(|i| store::audit::AuditEvent {
            at: app.now() + i,
            event: "test.paged",
            client_id: Some("c".into()),
            subject: Some("someone".into()),
            ip: None,
            detail: serde_json::json!({}),
        })
        .collect();
    store::audit::insert_many(&app.state.db, events)
        .await
        .unwrap();
    let bad = op.get("/admin/audit?before=yesterday").await;
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("before must be an event number"));
    let page = op.get("/admin/audit?event=test.paged&actor=someone").await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert_eq!(html.matches("<td>test.paged</td>").count(), 50);
    assert!(!html.contains("user.login"));
    // As a browser reads the attribute (HTML entities decoded).
    let next = html
        .split("<a href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("before="))
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&amp;", "&");
    let older = op.get(&next).await;
    assert_eq!(
        String::from_utf8_lossy(&older.body)
            .matches("<td>test.paged</td>")
            .count(),
        5
    );
}
both!(operator_pages_are_for_operators);

/// The agents list shows when each agent last got a token and how many
/// may be live, and pages 25 at a time.
async fn agents_list_usage_and_pages(app: TestApp) {
    let first = agent(&app, "carol", "read", &[]).await;
    // The list is oldest first; under the test's frozen clock, agents made
    // in the same second would be ordered by their random ids.
    app.clock.advance(1);
    for _ in 0..26 {
        agent(&app, "carol", "read", &[]).await;
    }
    let t = first
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await;
    assert_eq!(t.status, 200);
    app.audit_events_with(&["token.issued"]).await;

    let carol = Browser::new(&app);
    carol.login("carol", PASSWORD).await;
    let page = carol.get("/account/agents").await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    let row = &html[html.find(&first.id).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("<td>just now</td><td>1</td>"),
        "the first agent's row: {row}"
    );
    assert_eq!(html.matches("/account/agents/agent").count(), 25, "{html}");
    assert!(html.contains("href=\"/account/agents?page=1\" rel=\"next\""));
    let second = carol.get("/account/agents?page=1").await;
    let html = String::from_utf8_lossy(&second.body).to_string();
    assert_eq!(html.matches("<td>never</td>").count(), 2, "{html}");
    assert!(html.contains("rel=\"prev\"") && !html.contains("rel=\"next\""));
    assert_eq!(carol.get("/account/agents?page=x").await.status, 400);
}
both!(agents_list_usage_and_pages);
