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
    assert!(app.state.agent_active(&a.id).await.unwrap());

    // Another owner: 403 on every page and action, nothing changes.
    user(&app, "bob").await;
    let bob = Browser::new(&app);
    bob.login("bob", PASSWORD).await;
    let bob_list = bob.get("/account/agents").await;
    assert!(!String::from_utf8_lossy(&bob_list.body).contains(&a.id));
    assert_eq!(
        bob.get(&format!("/account/agents/{}", a.id)).await.status,
        403
    );
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
    assert!(app.state.agent_active(&a.id).await.unwrap());
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
    assert_eq!(token_now().await.status, 200);
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
