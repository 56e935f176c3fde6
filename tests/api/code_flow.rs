//! OAuth 2.1 authorization code flow, as a browser and a client drive it,
//! and the RFC 9700 attacks on it.

use std::collections::HashMap;
use std::sync::Mutex;

use agentauth::accounts;
use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{ISSUER, TestApp, TestResponse, form};

pub const REDIRECT: &str = "http://127.0.0.1/cb";
pub const PASSWORD: &str = "correct horse battery";

/// A cookie jar over the test router.
pub struct Browser<'a> {
    app: &'a TestApp,
    jar: Mutex<HashMap<String, String>>,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            jar: Mutex::new(HashMap::new()),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.jar
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn store(&self, r: &TestResponse) {
        for v in r.headers.get_all(header::SET_COOKIE) {
            let c = cookie::Cookie::parse(v.to_str().unwrap().to_string()).unwrap();
            let mut jar = self.jar.lock().unwrap();
            if c.value().is_empty() {
                jar.remove(c.name());
            } else {
                jar.insert(c.name().to_string(), c.value().to_string());
            }
        }
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.lock().unwrap().insert(name.into(), value.into());
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        let r = self
            .app
            .send(
                Request::get(path)
                    .header(header::COOKIE, self.cookie_header())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        self.store(&r);
        r
    }

    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> TestResponse {
        let r = self
            .app
            .send(
                Request::post(path)
                    .header(header::COOKIE, self.cookie_header())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(form(pairs)))
                    .unwrap(),
            )
            .await;
        self.store(&r);
        r
    }

    /// Signs in through the login form.
    pub async fn login(&self, username: &str, password: &str) -> TestResponse {
        let page = self.get("/login").await;
        let csrf = hidden(&page, "csrf_token");
        self.post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("username", username),
                ("password", password),
                ("return_to", "/account"),
            ],
        )
        .await
    }
}

/// The value of a hidden form field on an HTML page.
pub fn hidden(page: &TestResponse, name: &str) -> String {
    let html = String::from_utf8_lossy(&page.body);
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end]
        .replace("&amp;", "&")
        .replace("&#x3d;", "=")
        .replace("&#x2f;", "/")
        .replace("&quot;", "\"")
}

pub fn location(r: &TestResponse) -> String {
    assert_eq!(
        r.status,
        303,
        "expected a 303; body {}",
        String::from_utf8_lossy(&r.body)
    );
    r.header("location").unwrap().to_string()
}

pub fn query_of(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

pub fn pkce() -> (String, String) {
    let verifier = agentauth::crypto::random_token().unwrap();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(agentauth::crypto::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

pub async fn public_client(app: &TestApp) -> String {
    let reg = app
        .register(json!({
            "client_name": "Test MCP Client",
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": [REDIRECT, "https://app.example.com/cb"],
            "token_endpoint_auth_method": "none",
            "scope": "read write offline_access",
        }))
        .await;
    reg["client_id"].as_str().unwrap().to_string()
}

pub async fn user(app: &TestApp, name: &str) {
    accounts::create_user(&app.state.db, name, PASSWORD.into(), app.now())
        .await
        .unwrap();
}

pub fn authorize_url(client_id: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "read"),
        ("state", "xyz"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("resource", "https://mcp.example.com/mcp"),
    ];
    pairs.extend_from_slice(extra);
    format!("/authorize?{}", form(&pairs))
}

/// Signs in (as alice, when not yet), approves, exchanges the code as a
/// public client, and returns the refresh token.
pub async fn refresh_token_for(app: &TestApp, browser: &Browser<'_>, client_id: &str) -> String {
    let (verifier, challenge) = pkce();
    let code = get_code(app, browser, client_id, &challenge).await;
    let r = exchange(app, client_id, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["refresh_token"].as_str().unwrap().to_string()
}

/// Signs in, approves, and returns the code.
pub async fn get_code(
    app: &TestApp,
    browser: &Browser<'_>,
    client_id: &str,
    challenge: &str,
) -> String {
    get_code_at(app, browser, &authorize_url(client_id, challenge, &[])).await
}

/// Follows `url` (an authorization request with state `xyz` and
/// redirect_uri [`REDIRECT`]): signs in as alice when asked, approves, and
/// returns the code.
pub async fn get_code_at(app: &TestApp, browser: &Browser<'_>, url: &str) -> String {
    let r = browser.get(url).await;
    let r = if r.status == 303 && location(&r).starts_with("/login") {
        let login = browser.get(&location(&r)).await;
        let csrf = hidden(&login, "csrf_token");
        let return_to = hidden(&login, "return_to");
        let r = browser
            .post(
                "/login",
                &[
                    ("csrf_token", &csrf),
                    ("username", "alice"),
                    ("password", PASSWORD),
                    ("return_to", &return_to),
                ],
            )
            .await;
        browser.get(&location(&r)).await
    } else {
        r
    };
    let r = if r.status == 200 {
        let csrf = hidden(&r, "csrf_token");
        let request = hidden(&r, "request");
        browser
            .post(
                "/authorize/decision",
                &[
                    ("csrf_token", &csrf),
                    ("request", &request),
                    ("decision", "approve"),
                ],
            )
            .await
    } else {
        r
    };
    let to = location(&r);
    assert!(to.starts_with(REDIRECT), "{to}");
    let q = query_of(&to);
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], ISSUER, "RFC 9207");
    let _ = app;
    q["code"].clone()
}

pub async fn exchange(app: &TestApp, client_id: &str, code: &str, verifier: &str) -> TestResponse {
    app.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", REDIRECT),
        ],
        None,
    )
    .await
}

pub async fn refresh(
    app: &TestApp,
    client_id: &str,
    rt: &str,
    extra: &[(&str, &str)],
) -> TestResponse {
    let mut pairs = vec![
        ("grant_type", "refresh_token"),
        ("client_id", client_id),
        ("refresh_token", rt),
    ];
    pairs.extend_from_slice(extra);
    app.post_form("/token", &pairs, None).await
}

/// The whole flow: login page, consent page (client name, redirect host,
/// resource, scopes; CSP), code with state and iss, PKCE exchange, token
/// for the resource with the user as subject, refresh rotation.
async fn code_flow_end_to_end(app: TestApp) {
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);

    let r = browser
        .get(&authorize_url(&client_id, &challenge, &[]))
        .await;
    let login_url = location(&r);
    assert!(login_url.starts_with("/login?return_to="));
    let login = browser.get(&login_url).await;
    assert_eq!(login.status, 200);
    assert!(
        login
            .header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let csrf = hidden(&login, "csrf_token");
    let return_to = hidden(&login, "return_to");
    let r = browser
        .post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
                ("return_to", &return_to),
            ],
        )
        .await;
    let session_cookie = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("__Host-agentauth_session="))
        .unwrap();
    assert!(
        session_cookie.contains("HttpOnly")
            && session_cookie.contains("SameSite=Lax")
            && session_cookie.contains("Secure"),
        "{session_cookie}"
    );
    let consent = browser.get(&location(&r)).await;
    assert_eq!(consent.status, 200);
    assert!(
        consent
            .header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = String::from_utf8_lossy(&consent.body).to_string();
    for shown in [
        "Test MCP Client",
        "127.0.0.1",
        "mcp.example.com",
        "Use the permission “read”",
    ] {
        assert!(html.contains(shown), "consent page shows {shown}");
    }
    let r = browser
        .post(
            "/authorize/decision",
            &[
                ("csrf_token", &hidden(&consent, "csrf_token")),
                ("request", &hidden(&consent, "request")),
                ("decision", "approve"),
            ],
        )
        .await;
    let q = query_of(&location(&r));
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], ISSUER);

    let r = exchange(&app, &client_id, &q["code"], &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    let claims = crate::helpers::jwt_parts(body["access_token"].as_str().unwrap()).1;
    assert_eq!(claims["aud"], "https://mcp.example.com/mcp");
    assert_ne!(claims["sub"], client_id.as_str(), "sub is the user");
    assert_eq!(claims["scope"], "read");
    let rt = body["refresh_token"].as_str().unwrap().to_string();

    // Consent is remembered: a second authorization goes straight back.
    let (v2, c2) = pkce();
    let r = browser.get(&authorize_url(&client_id, &c2, &[])).await;
    let code2 = query_of(&location(&r))["code"].clone();
    assert_eq!(exchange(&app, &client_id, &code2, &v2).await.status, 200);

    // Refresh rotates.
    let r = refresh(&app, &client_id, &rt, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rt2 = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt, rt2);
    assert_eq!(refresh(&app, &client_id, &rt2, &[]).await.status, 200);
}
both!(code_flow_end_to_end);

/// SECURITY.md, "Token endpoint: code grant": a code works once; a replay fails and revokes
/// what the first redemption issued; 64 racers, one winner.
async fn code_replay_fails_and_revokes_tokens(app: TestApp) {
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let first = exchange(&app, &client_id, &code, &verifier).await.json();
    exchange(&app, &client_id, &code, &verifier)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(
        app.introspect(first["access_token"].as_str().unwrap())
            .await,
        json!({"active": false})
    );
    refresh(
        &app,
        &client_id,
        first["refresh_token"].as_str().unwrap(),
        &[],
    )
    .await
    .assert_error(400, "invalid_grant");

    let (verifier, challenge) = pkce();
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let app = std::sync::Arc::new(app);
    let statuses = crate::helpers::race(64, || {
        let (app, client_id, code, verifier) = (
            app.clone(),
            client_id.clone(),
            code.clone(),
            verifier.clone(),
        );
        async move {
            exchange(&app, &client_id, &code, &verifier)
                .await
                .status
                .as_u16()
        }
    })
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
}
both!(code_replay_fails_and_revokes_tokens);

/// SECURITY.md, "Token endpoint: code grant": another client, wrong or missing verifier, another
/// redirect_uri, an expired code: all `invalid_grant`.
async fn code_exchange_checks_binding(app: TestApp) {
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let other = public_client(&app).await;
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    exchange(&app, &other, &code, &verifier)
        .await
        .assert_error(400, "invalid_grant");
    exchange(&app, &client_id, &code, &pkce().0)
        .await
        .assert_error(400, "invalid_grant");
    app.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_grant");
    app.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", "https://app.example.com/cb"),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_grant");
    // A resource outside the grant.
    app.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("code_verifier", &verifier),
            ("resource", "https://other.example.com/"),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_target");
    // None of the failures spent the code.
    assert_eq!(
        exchange(&app, &client_id, &code, &verifier).await.status,
        200
    );

    let (verifier, challenge) = pkce();
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    app.clock.advance(61);
    exchange(&app, &client_id, &code, &verifier)
        .await
        .assert_error(400, "invalid_grant");
}
both!(code_exchange_checks_binding);

/// SECURITY.md, "Authorization endpoint": errors before the client and redirect URI are
/// verified are pages, never redirects; after, 303 back with state and iss.
async fn authorize_errors_never_redirect_to_unverified_uris(app: TestApp) {
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let (_, challenge) = pkce();
    let browser = Browser::new(&app);
    browser.login("alice", PASSWORD).await;
    let base = |uri: &str| {
        format!(
            "/authorize?{}",
            form(&[
                ("response_type", "code"),
                ("client_id", &client_id),
                ("redirect_uri", uri),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", "s")
            ])
        )
    };
    for bad in [
        "http://127.0.0.1/cb/",
        "http://127.0.0.1/CB",
        "http://127.0.0.1/cb?x=1",
        "http://127.0.0.1/cb#f",
        "https://localhost/cb",
        "http://127.0.0.1:8080/cb?x=1",
        "https://app.example.com/cb/..;/evil",
        "https://app.example.com/%2e%2e/cb",
        "https://evil.app.example.com/cb",
        "https://app.example.com@evil.com/cb",
        "https://a@b@evil.com/cb",
        "HTTPS://app.example.com/cb",
    ] {
        let r = browser.get(&base(bad)).await;
        assert_eq!(r.status, 400, "{bad} must not redirect");
        assert!(r.header("location").is_none());
    }
    // Unknown client, missing client_id, duplicated client_id: pages.
    for path in [
        format!("/authorize?response_type=code&client_id=nope&redirect_uri={REDIRECT}"),
        "/authorize?response_type=code".to_string(),
        format!("/authorize?client_id={client_id}&client_id={client_id}&redirect_uri={REDIRECT}"),
    ] {
        let r = browser.get(&path).await;
        assert_eq!(r.status, 400, "{path}");
        assert!(r.header("location").is_none());
    }
    // Loopback: any port.
    let r = browser.get(&base("http://127.0.0.1:53111/cb")).await;
    assert_eq!(r.status, 200, "loopback port may vary (RFC 8252 §7.3)");

    // Verified redirect: errors go back with state and iss.
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "admin")], "invalid_scope"),
        (vec![("resource", "/relative")], "invalid_target"),
        (
            vec![("resource", "https://mcp.example.com/#frag")],
            "invalid_target",
        ),
        (vec![("state", "again")], "invalid_request"),
    ];
    for (overrides, error) in cases {
        let mut pairs: Vec<(&str, &str)> = vec![
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("state", "s"),
            ("code_challenge", &challenge),
        ];
        let mut has_rt = false;
        let mut has_method = false;
        for (k, v) in &overrides {
            has_rt |= *k == "response_type";
            has_method |= *k == "code_challenge_method";
            pairs.push((k, v));
        }
        if !has_rt {
            pairs.push(("response_type", "code"));
        }
        if !has_method {
            pairs.push(("code_challenge_method", "S256"));
        }
        let r = browser.get(&format!("/authorize?{}", form(&pairs))).await;
        let q = query_of(&location(&r));
        assert_eq!(
            q.get("error").map(String::as_str),
            Some(error),
            "{overrides:?} -> {q:?}"
        );
        assert_eq!(q["iss"], ISSUER);
        // A repeated state is ambiguous, so none is echoed.
        let expected_state = if overrides.iter().any(|(k, _)| *k == "state") {
            None
        } else {
            Some("s")
        };
        assert_eq!(q.get("state").map(String::as_str), expected_state);
    }
    // No code_challenge at all.
    let r = browser
        .get(&format!(
            "/authorize?{}",
            form(&[
                ("response_type", "code"),
                ("client_id", &client_id),
                ("redirect_uri", REDIRECT)
            ])
        ))
        .await;
    assert_eq!(query_of(&location(&r))["error"], "invalid_request");
}
both!(authorize_errors_never_redirect_to_unverified_uris);

/// SECURITY.md, "Refresh tokens": rotation, reuse revokes the family, generation
/// order, other clients, narrower scope only, 64 racers.
async fn refresh_rotation_and_reuse(app: TestApp) {
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let other = public_client(&app).await;
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let rt1 = exchange(&app, &client_id, &code, &verifier).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    refresh(&app, &other, &rt1, &[])
        .await
        .assert_error(400, "invalid_grant");
    refresh(&app, &client_id, &rt1, &[("scope", "read write")])
        .await
        .assert_error(400, "invalid_scope");
    refresh(
        &app,
        &client_id,
        &rt1,
        &[("resource", "https://other.example.com/")],
    )
    .await
    .assert_error(400, "invalid_target");
    let r = refresh(&app, &client_id, &rt1, &[("scope", "read")]).await;
    assert_eq!(r.status, 200);
    let rt2 = r.json()["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&app, &client_id, &rt2, &[]).await;
    let rt3 = r.json()["refresh_token"].as_str().unwrap().to_string();
    let at3 = r.json()["access_token"].as_str().unwrap().to_string();
    // Two rotations in the same second, then the oldest replayed: rejected,
    // and the whole family (including the newest) dies.
    refresh(&app, &client_id, &rt1, &[])
        .await
        .assert_error(400, "invalid_grant");
    refresh(&app, &client_id, &rt3, &[])
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(app.introspect(&at3).await, json!({"active": false}));

    // 64 concurrent refreshes of one token: exactly one rotates; inside
    // the grace window (issue 12) the others are retries and get the very
    // same pair, so the family gets exactly one child.
    let (verifier, challenge) = pkce();
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let rt = exchange(&app, &client_id, &code, &verifier).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let app = std::sync::Arc::new(app);
    let browser = Browser::new(&app);
    let children = refresh_race(&app, &client_id, &rt, 64).await;
    assert_eq!(children.len(), 1, "one child for all: {children:?}");
    let child = children.into_iter().next().unwrap();
    assert_eq!(refresh(&app, &client_id, &child, &[]).await.status, 200);

    // Past the window, a rotated token is reuse again: the family dies.
    let (verifier, challenge) = pkce();
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let rt = exchange(&app, &client_id, &code, &verifier).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = refresh(&app, &client_id, &rt, &[]).await;
    let child = r.json()["refresh_token"].as_str().unwrap().to_string();
    app.clock.advance(31);
    refresh(&app, &client_id, &rt, &[])
        .await
        .assert_error(400, "invalid_grant");
    refresh(&app, &client_id, &child, &[])
        .await
        .assert_error(400, "invalid_grant");
}

/// Runs `n` concurrent refreshes of `rt` (on `app`); every one must
/// succeed. Returns the distinct refresh tokens they got.
pub async fn refresh_race(
    app: &std::sync::Arc<TestApp>,
    client_id: &str,
    rt: &str,
    n: usize,
) -> std::collections::BTreeSet<String> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (app, client_id, rt) = (app.clone(), client_id.to_string(), rt.to_string());
            tokio::spawn(async move { refresh(&app, &client_id, &rt, &[]).await })
        })
        .collect();
    let mut children = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        children.insert(r.json()["refresh_token"].as_str().unwrap().to_string());
    }
    children
}
both!(refresh_rotation_and_reuse);

/// CSRF on the consent form, session fixation, and deny.
async fn consent_csrf_fixation_and_deny(app: TestApp) {
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let (_, challenge) = pkce();
    let browser = Browser::new(&app);

    // Fixation: a planted session cookie is replaced at login.
    browser.set_cookie("__Host-agentauth_session", "planted-by-attacker");
    browser.login("alice", PASSWORD).await;
    assert_ne!(
        browser.cookie("__Host-agentauth_session").as_deref(),
        Some("planted-by-attacker")
    );

    let consent = browser
        .get(&authorize_url(&client_id, &challenge, &[]))
        .await;
    assert_eq!(consent.status, 200);
    let request = hidden(&consent, "request");
    // A forged form without the right token: refused, no redirect, no code.
    for token in ["", "forged"] {
        let r = browser
            .post(
                "/authorize/decision",
                &[
                    ("csrf_token", token),
                    ("request", &request),
                    ("decision", "approve"),
                ],
            )
            .await;
        assert_eq!(r.status, 400);
        assert!(r.header("location").is_none());
    }
    let r = browser
        .post(
            "/authorize/decision",
            &[
                ("csrf_token", &hidden(&consent, "csrf_token")),
                ("request", &request),
                ("decision", "deny"),
            ],
        )
        .await;
    let q = query_of(&location(&r));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "xyz");

    // Wrong password, and login CSRF.
    let other = Browser::new(&app);
    let r = other.login("alice", "wrong password").await;
    assert_eq!(r.status, 401);
    let r = other
        .post(
            "/login",
            &[
                ("csrf_token", "forged"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
}
both!(consent_csrf_fixation_and_deny);

/// prompt=none without a session or consent answers with an error redirect.
async fn prompt_none(app: TestApp) {
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let (_, challenge) = pkce();
    let browser = Browser::new(&app);
    let r = browser
        .get(&authorize_url(
            &client_id,
            &challenge,
            &[("prompt", "none")],
        ))
        .await;
    assert_eq!(query_of(&location(&r))["error"], "login_required");
    browser.login("alice", PASSWORD).await;
    let r = browser
        .get(&authorize_url(
            &client_id,
            &challenge,
            &[("prompt", "none")],
        ))
        .await;
    assert_eq!(query_of(&location(&r))["error"], "consent_required");
    let _: Value = json!({});
}
both!(prompt_none);

/// The owner's page lists grants and revokes them in one click.
async fn account_page_revokes_grants(app: TestApp) {
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let rt = exchange(&app, &client_id, &code, &verifier).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let page = browser.get("/account").await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains("Test MCP Client"));
    let r = browser
        .post(
            "/account/revoke",
            &[
                ("csrf_token", &hidden(&page, "csrf_token")),
                ("kind", "consent"),
                ("id", &client_id),
            ],
        )
        .await;
    assert_eq!(location(&r), "/account");
    refresh(&app, &client_id, &rt, &[])
        .await
        .assert_error(400, "invalid_grant");
    // Consent is gone: the next authorization asks again.
    let (_, challenge) = pkce();
    assert_eq!(
        browser
            .get(&authorize_url(&client_id, &challenge, &[]))
            .await
            .status,
        200
    );
}
both!(account_page_revokes_grants);

/// Serves `documents` (path → JSON) on a loopback port; returns the base URL.
pub async fn document_server(documents: Vec<(&'static str, Value, &'static str)>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut router = axum::Router::new();
    for (path, doc, cache) in documents {
        let body = doc.to_string().replace("{base}", &base);
        router = router.route(
            path,
            axum::routing::get(move || {
                let body = body.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, cache),
                        ],
                        body,
                    )
                }
            }),
        );
    }
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// A client ID metadata document drives a full flow; a document whose
/// client_id differs, one asking for a client secret, and a URL with a
/// fragment are refused without a redirect (SECURITY.md, "Registration and client metadata documents").
#[tokio::test]
async fn client_id_metadata_document_flow() {
    let base = document_server(vec![
        (
            "/client.json",
            json!({
                "client_id": "{base}/client.json",
                "client_name": "Document Client",
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "scope": "read"
            }),
            "max-age=600",
        ),
        ("/wrong-id.json", json!({ "client_id": "https://elsewhere.example/client.json", "redirect_uris": [REDIRECT] }), "max-age=600"),
        (
            "/secret.json",
            json!({ "client_id": "{base}/secret.json", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic" }),
            "no-store",
        ),
    ])
    .await;
    let mut args = crate::helpers::serve_args();
    args.insecure_fetch = true;
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, args).await;
    user(&app, "alice").await;
    let m = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    assert_eq!(m["client_id_metadata_document_supported"], true);

    let client_id = format!("{base}/client.json");
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&app);
    browser.login("alice", PASSWORD).await;
    let consent = browser
        .get(&authorize_url(&client_id, &challenge, &[]))
        .await;
    assert_eq!(
        consent.status,
        200,
        "{}",
        String::from_utf8_lossy(&consent.body)
    );
    let html = String::from_utf8_lossy(&consent.body).to_string();
    assert!(html.contains("Document Client"));
    assert!(
        html.contains("only redirect addresses are on this computer"),
        "localhost-only warning"
    );
    let r = browser
        .post(
            "/authorize/decision",
            &[
                ("csrf_token", &hidden(&consent, "csrf_token")),
                ("request", &hidden(&consent, "request")),
                ("decision", "approve"),
            ],
        )
        .await;
    let code = query_of(&location(&r))["code"].clone();
    let r = exchange(&app, &client_id, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["refresh_token"].is_string());

    for bad in [
        format!("{base}/wrong-id.json"),
        format!("{base}/secret.json"),
        format!("{base}/client.json#frag"),
        format!("{base}/missing.json"),
    ] {
        let r = browser.get(&authorize_url(&bad, &challenge, &[])).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.header("location").is_none(), "{bad}");
    }
}

/// SECURITY.md, "Registration and client metadata documents": with the SSRF guards on, a document URL on a
/// loopback or private address is never fetched.
#[tokio::test]
async fn client_id_metadata_document_on_private_address_is_refused() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    user(&app, "alice").await;
    let browser = Browser::new(&app);
    browser.login("alice", PASSWORD).await;
    let (_, challenge) = pkce();
    for id in [
        "https://127.0.0.1/client.json",
        "https://10.0.0.1/client.json",
        "https://[::1]/client.json",
        "http://example.com/client.json",
    ] {
        let r = browser.get(&authorize_url(id, &challenge, &[])).await;
        assert_eq!(r.status, 400, "{id}");
        assert!(r.header("location").is_none());
    }
}

async fn dpop_form(app: &TestApp, pairs: &[(&str, &str)], proof: Option<&str>) -> TestResponse {
    let mut req =
        Request::post("/token").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    app.send(req.body(Body::from(form(pairs))).unwrap()).await
}

/// RFC 9449 §5 and §10, SECURITY.md, "Refresh tokens" and "Resource server kit and DPoP": a public client's refresh
/// token is bound to the proof key of the code exchange; `dpop_jkt` binds
/// the code itself.
async fn dpop_binds_public_refresh_tokens_and_codes(app: TestApp) {
    use crate::dpop::ProofKey;
    user(&app, "alice").await;
    let client_id = public_client(&app).await;
    let browser = Browser::new(&app);
    let key = ProofKey::new();

    let (verifier, challenge) = pkce();
    let code = get_code(&app, &browser, &client_id, &challenge).await;
    let pairs = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let r = dpop_form(&app, &pairs, Some(&key.proof(&app))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["token_type"], "DPoP");
    let rt = r.json()["refresh_token"].as_str().unwrap().to_string();
    let refresh_pairs = [
        ("grant_type", "refresh_token"),
        ("client_id", client_id.as_str()),
        ("refresh_token", rt.as_str()),
    ];
    dpop_form(&app, &refresh_pairs, None)
        .await
        .assert_error(400, "invalid_dpop_proof");
    dpop_form(&app, &refresh_pairs, Some(&ProofKey::new().proof(&app)))
        .await
        .assert_error(400, "invalid_dpop_proof");
    let r = dpop_form(&app, &refresh_pairs, Some(&key.proof(&app))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let child = r.json()["refresh_token"].as_str().unwrap().to_string();
    // Issue 12 item 6: a retry inside the grace window by the same key gets
    // the same pair; by another key it is reuse, and the family dies.
    let again = dpop_form(&app, &refresh_pairs, Some(&key.proof(&app))).await;
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(again.json()["refresh_token"], child.as_str());
    dpop_form(&app, &refresh_pairs, Some(&ProofKey::new().proof(&app)))
        .await
        .assert_error(400, "invalid_grant");
    let child_pairs = [
        ("grant_type", "refresh_token"),
        ("client_id", client_id.as_str()),
        ("refresh_token", child.as_str()),
    ];
    dpop_form(&app, &child_pairs, Some(&key.proof(&app)))
        .await
        .assert_error(400, "invalid_grant");

    // dpop_jkt at /authorize: the code needs a proof by that key.
    let (verifier, challenge) = pkce();
    let jkt = key.thumbprint();
    let r = browser
        .get(&authorize_url(
            &client_id,
            &challenge,
            &[("dpop_jkt", &jkt)],
        ))
        .await;
    let code = query_of(&location(&r))["code"].clone();
    let pairs = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    dpop_form(&app, &pairs, None)
        .await
        .assert_error(400, "invalid_dpop_proof");
    dpop_form(&app, &pairs, Some(&ProofKey::new().proof(&app)))
        .await
        .assert_error(400, "invalid_dpop_proof");
    assert_eq!(
        dpop_form(&app, &pairs, Some(&key.proof(&app))).await.status,
        200
    );
}
both!(dpop_binds_public_refresh_tokens_and_codes);

/// Two nodes on one PostgreSQL race one refresh token: one rotation, and
/// inside the grace window every racer gets its pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_across_nodes_has_one_winner() {
    let (a, b) = crate::helpers::spawn_pg_nodes().await;
    user(&a, "alice").await;
    let client_id = public_client(&a).await;
    let (verifier, challenge) = pkce();
    let browser = Browser::new(&a);
    let code = get_code(&a, &browser, &client_id, &challenge).await;
    let rt = exchange(&a, &client_id, &code, &verifier).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    // Retries from two egress addresses, landing on two nodes: one
    // rotation, and every retry (inside the grace window) gets its pair.
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (client_id, rt) = (client_id.clone(), rt.clone());
            tokio::spawn(async move { refresh(&node, &client_id, &rt, &[]).await })
        })
        .collect();
    let mut children = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        children.insert(r.json()["refresh_token"].as_str().unwrap().to_string());
    }
    assert_eq!(children.len(), 1, "exactly one child across nodes");
}

/// Login is throttled per account: the sixth try in a minute is refused
/// even with the right password.
#[tokio::test]
async fn login_is_throttled_per_account() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    user(&app, "alice").await;
    let browser = Browser::new(&app);
    for _ in 0..5 {
        assert_eq!(browser.login("alice", "wrong password").await.status, 401);
    }
    assert_eq!(browser.login("alice", PASSWORD).await.status, 429);
}

/// Self sign-up is off by default (404) and, when on, creates an account
/// and signs it in; a taken name is refused.
#[tokio::test]
async fn self_signup_switch() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    assert_eq!(Browser::new(&app).get("/signup").await.status, 404);

    let mut args = crate::helpers::serve_args();
    args.signup = true;
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, args).await;
    let browser = Browser::new(&app);
    let page = browser.get("/signup").await;
    assert_eq!(page.status, 200);
    let csrf = hidden(&page, "csrf_token");
    let r = browser
        .post(
            "/signup",
            &[
                ("csrf_token", &csrf),
                ("username", "bob"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = browser
        .post(
            "/signup",
            &[
                ("csrf_token", &csrf),
                ("username", "bob"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(location(&r), "/account");
    assert_eq!(browser.get("/account").await.status, 200);
    let other = Browser::new(&app);
    let page = other.get("/signup").await;
    let r = other
        .post(
            "/signup",
            &[
                ("csrf_token", &hidden(&page, "csrf_token")),
                ("username", "bob"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 400, "name taken");
    let r = other
        .post(
            "/signup",
            &[
                ("csrf_token", "forged"),
                ("username", "carol"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 400, "CSRF");
}
