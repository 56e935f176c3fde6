//! The consent page for MCP clients (issue 14 item 4): a resource shown in
//! its own words (RFC 9728 `resource_name`, `scope_descriptions`), and a
//! step-up that asks only for the scopes not yet allowed and keeps the
//! earlier ones.

use serde_json::json;

use crate::code_flow::{
    Browser, PASSWORD, exchange, hidden, location, pkce, public_client, query_of, user,
};
use crate::helpers::{Backend, TestApp, form, jwt_parts, serve_args, spawn_app_with};

async fn app_for(resource: &str, backend: Backend) -> TestApp {
    let mut args = serve_args();
    args.insecure_fetch = true;
    args.resources.push(resource.to_string());
    let app = spawn_app_with(backend, args).await;
    user(&app, "alice").await;
    app
}

fn authorize(client_id: &str, challenge: &str, scope: &str, resource: &str) -> String {
    format!(
        "/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", crate::code_flow::REDIRECT),
            ("scope", scope),
            ("state", "xyz"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("resource", resource),
        ])
    )
}

fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let Some(from) = html.find(start) else {
        return "";
    };
    let rest = &html[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

async fn approve(browser: &Browser<'_>, consent: &crate::helpers::TestResponse) -> String {
    let r = browser
        .post(
            "/authorize/decision",
            &[
                ("csrf_token", &hidden(consent, "csrf_token")),
                ("request", &hidden(consent, "request")),
                ("decision", "approve"),
            ],
        )
        .await;
    query_of(&location(&r))["code"].clone()
}

async fn resource_names_itself_and_step_up_asks_only_for_new_scopes(backend: Backend) {
    let base = crate::code_flow::document_server(vec![(
        "/.well-known/oauth-protected-resource/mcp",
        json!({
            "resource": "{base}/mcp",
            "authorization_servers": [crate::helpers::ISSUER],
            "resource_name": "Weather Tools",
            "scopes_supported": ["read", "write"],
            "bearer_methods_supported": ["header"],
            "scope_descriptions": {"write": "Change the forecast (an admin tool)"},
        }),
        "max-age=60",
    )])
    .await;
    let resource = format!("{base}/mcp");
    let app = app_for(&resource, backend).await;
    let client_id = public_client(&app).await;
    let browser = Browser::new(&app);
    browser.login("alice", PASSWORD).await;

    // First consent: `read` only, the resource named as it names itself.
    let (verifier, challenge) = pkce();
    let consent = browser
        .get(&authorize(&client_id, &challenge, "read", &resource))
        .await;
    assert_eq!(consent.status, 200);
    let html = String::from_utf8_lossy(&consent.body).replace("&#x2f;", "/");
    assert!(html.contains("<strong>Weather Tools</strong>"), "{html}");
    assert!(!html.contains("kept-scopes"), "nothing allowed yet: {html}");
    let code = approve(&browser, &consent).await;
    let r = exchange(&app, &client_id, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Step-up to `read write`: the page asks only for `write`, described
    // in the resource's words, and lists `read` as already allowed.
    let (verifier, challenge) = pkce();
    let consent = browser
        .get(&authorize(&client_id, &challenge, "read write", &resource))
        .await;
    assert_eq!(
        consent.status,
        200,
        "a new scope needs consent: {}",
        String::from_utf8_lossy(&consent.body)
    );
    let html = String::from_utf8_lossy(&consent.body).replace("&#x2f;", "/");
    let new = between(&html, "id=\"new-scopes\"", "</ul>");
    let kept = between(&html, "id=\"kept-scopes\"", "</ul>");
    assert!(
        new.contains("Change the forecast (an admin tool)"),
        "{html}"
    );
    assert!(!new.contains("<code>read</code>"), "{new}");
    assert!(kept.contains("<code>read</code>"), "{html}");
    assert!(html.contains("It now also asks to"));
    let code = approve(&browser, &consent).await;
    let r = exchange(&app, &client_id, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, claims) = jwt_parts(r.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["aud"], resource);

    // The earlier scope was kept: asking for either alone now needs no page.
    for scope in ["read", "write", "read write"] {
        let (_, challenge) = pkce();
        let r = browser
            .get(&authorize(&client_id, &challenge, scope, &resource))
            .await;
        assert_eq!(r.status, 303, "{scope} was allowed");
        assert!(query_of(&location(&r)).contains_key("code"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_consent_sqlite() {
    resource_names_itself_and_step_up_asks_only_for_new_scopes(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_consent_postgres() {
    resource_names_itself_and_step_up_asks_only_for_new_scopes(Backend::Postgres).await
}

/// A metadata document that describes another resource (RFC 9728 §3.3) is
/// ignored: the page shows the bare URI, never the impostor's name.
#[tokio::test]
async fn metadata_for_another_resource_is_ignored() {
    let base = crate::code_flow::document_server(vec![(
        "/.well-known/oauth-protected-resource/mcp",
        json!({
            "resource": "https://bank.example.com/",
            "authorization_servers": [crate::helpers::ISSUER],
            "resource_name": "Your Bank",
            "bearer_methods_supported": ["header"],
        }),
        "max-age=60",
    )])
    .await;
    let resource = format!("{base}/mcp");
    let app = app_for(&resource, Backend::Sqlite).await;
    let client_id = public_client(&app).await;
    let browser = Browser::new(&app);
    browser.login("alice", PASSWORD).await;
    let (_, challenge) = pkce();
    let consent = browser
        .get(&authorize(&client_id, &challenge, "read", &resource))
        .await;
    assert_eq!(consent.status, 200);
    let html = String::from_utf8_lossy(&consent.body).replace("&#x2f;", "/");
    assert!(!html.contains("Your Bank"), "{html}");
    assert!(html.contains(&format!("<code>{resource}</code>")), "{html}");
}

/// The registered `scope` bounds what a client an operator vouched for
/// (an initial access token) may ask for; a self-registered client's
/// `scope` is only its own claim, so it may ask for more (the resource's
/// offer and the owner's consent bound it), as MCP clients stepping up do.
#[tokio::test]
async fn registered_scope_is_a_ceiling_only_for_vouched_clients() {
    let app = app_for("https://tools.example.com/mcp", Backend::Sqlite).await;
    let metadata = json!({
        "grant_types": ["authorization_code"],
        "redirect_uris": [crate::code_flow::REDIRECT],
        "token_endpoint_auth_method": "none",
        "scope": "read",
    });
    let vouched = app.register(metadata.clone()).await["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let open = app.register_open(metadata).await["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let browser = Browser::new(&app);
    browser.login("alice", PASSWORD).await;
    let (_, challenge) = pkce();
    let r = browser
        .get(&authorize(
            &vouched,
            &challenge,
            "read write",
            "https://tools.example.com/mcp",
        ))
        .await;
    let to = query_of(&location(&r));
    assert_eq!(to["error"], "invalid_scope");
    let r = browser
        .get(&authorize(
            &open,
            &challenge,
            "read write",
            "https://tools.example.com/mcp",
        ))
        .await;
    assert_eq!(r.status, 200, "the owner is asked");
}
