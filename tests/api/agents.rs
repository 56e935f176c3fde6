//! Agents (issue 13): identities owned by a user with their own keys; the
//! tokens they get name them; passports; delegation by token exchange
//! (RFC 8693); the kill switch.

use std::time::{Duration, Instant};

use agentauth::store;
use serde_json::{Value, json};

use crate::code_flow::{Browser, PASSWORD, exchange, get_code_at, pkce, public_client, user};
use crate::dpop::ProofKey;
use crate::helpers::{ISSUER, TestApp, TestResponse, jwt_parts};
use crate::private_key_jwt::{ClientKey, client_key};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const PASSPORT: &str = "urn:agentauth:params:grant-type:passport";
const PASSPORT_TYPE: &str = "urn:agentauth:params:token-type:passport";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const MCP: &str = "https://mcp.example.com/mcp";

/// An agent: its id and the key it signs assertions with.
pub struct Agent {
    pub id: String,
    pub key: ClientKey,
}

/// Creates `owner` (if new) and an agent of theirs with `scope`, as
/// `agentauth agent create` does; `extra` keys are registered too.
pub async fn agent(app: &TestApp, owner: &str, scope: &str, extra: &[Value]) -> Agent {
    let owner_id = match store::users::by_username(&app.state.db, owner)
        .await
        .unwrap()
    {
        Some(u) => u.id,
        None => {
            user(app, owner).await;
            store::users::by_username(&app.state.db, owner)
                .await
                .unwrap()
                .unwrap()
                .id
        }
    };
    let key = client_key(&format!("k-{}", agentauth::crypto::random_id().unwrap()));
    let mut keys = vec![agentauth::agents::check_key(&key.jwk).unwrap()];
    for k in extra {
        keys.push(agentauth::agents::check_key(k).unwrap());
    }
    let (row, _) = agentauth::agents::create(
        &app.state.db,
        app.state.grants.as_ref(),
        agentauth::agents::NewAgent {
            name: format!("{owner}'s helper"),
            owner_id,
            scope: agentauth::oauth::scope::Scope::parse(scope).unwrap(),
            resources: Vec::new(),
            keys: jsonwebtoken::jwk::JwkSet { keys },
        },
        app.now(),
        "test",
    )
    .await
    .unwrap();
    Agent { id: row.id, key }
}

impl Agent {
    pub fn assertion(&self, app: &TestApp) -> String {
        self.key.assertion(json!({
            "iss": self.id, "sub": self.id, "aud": ISSUER,
            "jti": agentauth::crypto::random_id().unwrap(),
            "iat": app.now(), "exp": app.now() + 60,
        }))
    }

    /// POSTs /token as this agent with `pairs` (and a DPoP proof if given).
    pub async fn token(
        &self,
        app: &TestApp,
        pairs: &[(&str, &str)],
        dpop: Option<&str>,
    ) -> TestResponse {
        let assertion = self.assertion(app);
        let mut all = vec![
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ];
        all.extend_from_slice(pairs);
        match dpop {
            Some(proof) => app.post_form_with_dpop("/token", &all, proof).await,
            None => app.post_form("/token", &all, None).await,
        }
    }
}

/// Disables or enables an agent as the CLI does: a database write with its
/// audit row, and no cache invalidation on this node.
pub async fn set_agent_active(app: &TestApp, agent_id: &str, active: bool) {
    let event = agentauth::store::audit::AuditEvent {
        at: app.now(),
        event: if active {
            "agent.enabled"
        } else {
            "agent.disabled"
        },
        client_id: Some(agent_id.to_string()),
        subject: Some("cli".into()),
        ip: None,
        detail: json!({}),
    };
    assert!(
        store::agents::set_active(&app.state.db, agent_id, active, app.now(), event)
            .await
            .unwrap()
    );
}

fn ok(r: TestResponse) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn owner_id(app: &TestApp, name: &str) -> String {
    store::users::by_username(&app.state.db, name)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// An agent's client_credentials token names the agent and its owner,
/// and introspection says so; a DPoP proof must use one of its keys.
async fn agent_tokens_name_the_agent(app: TestApp) {
    let proof_key = ProofKey::new();
    let a = agent(
        &app,
        "alice",
        "read write",
        std::slice::from_ref(&proof_key.jwk),
    )
    .await;
    let t = ok(a
        .token(
            &app,
            &[
                ("grant_type", "client_credentials"),
                ("resource", MCP),
                ("scope", "read"),
            ],
            None,
        )
        .await);
    let (_, claims) = jwt_parts(t["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], a.id);
    assert_eq!(claims["agent_id"], a.id);
    assert_eq!(claims["owner"], owner_id(&app, "alice").await);
    let seen = app.introspect(t["access_token"].as_str().unwrap()).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["agent_id"], a.id);
    assert_eq!(seen["owner"], claims["owner"]);

    // Bound to one of its own keys...
    let t = ok(a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            Some(&proof_key.proof(&app)),
        )
        .await);
    assert_eq!(t["token_type"], "DPoP");
    // ...never to a stray one.
    let stray = ProofKey::new();
    a.token(
        &app,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some(&stray.proof(&app)),
    )
    .await
    .assert_error(400, "invalid_dpop_proof");
    // A key it does not hold cannot authenticate it.
    let thief = client_key("thief");
    let forged = thief.assertion(json!({"iss": a.id, "sub": a.id, "aud": ISSUER, "jti": "x1",
                                         "iat": app.now(), "exp": app.now() + 60}));
    app.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &forged),
        ],
        None,
    )
    .await
    .assert_error(401, "invalid_client");
}
crate::both!(agent_tokens_name_the_agent);

/// The passport: RFC 8693 response shape, a JWT with the agent's identity
/// bound to the key it proved, verifiable with an ordinary JWT library
/// against the JWKS, known to introspection (for the site it names).
async fn passports(app: TestApp) {
    let proof_key = ProofKey::new();
    let a = agent(
        &app,
        "alice",
        "read write",
        std::slice::from_ref(&proof_key.jwk),
    )
    .await;
    let r = ok(a
        .token(
            &app,
            &[
                ("grant_type", PASSPORT),
                ("scope", "read"),
                ("audience", "https://site.example"),
            ],
            Some(&proof_key.proof(&app)),
        )
        .await);
    assert_eq!(r["issued_token_type"], PASSPORT_TYPE);
    assert_eq!(r["token_type"], "N_A");
    // As long as an access token (`--passport-ttl` defaults to
    // `--access-token-ttl`).
    assert_eq!(r["expires_in"], 900);
    assert!(r.get("refresh_token").is_none());
    let passport = r["access_token"].as_str().unwrap();
    let (header, claims) = jwt_parts(passport);
    assert_eq!(header["typ"], "agent-passport+jwt");
    assert_eq!(claims["sub"], a.id);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], "https://site.example");
    assert_eq!(claims["owner"], owner_id(&app, "alice").await);
    assert_eq!(claims["agent_name"], "alice's helper");
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["cnf"]["jkt"], proof_key.thumbprint());

    // An ordinary JWT library with our JWKS verifies it.
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&app.get("/jwks.json").await.body).unwrap();
    let kid = header["kid"].as_str().unwrap();
    let jwk = jwks.find(kid).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["https://site.example"]);
    validation.set_issuer(&[ISSUER]);
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(
        passport,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap();

    // Introspection: the introspector and the site it names; nobody else.
    let seen = app.introspect(passport).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["token_type"], PASSPORT_TYPE);
    assert_eq!(seen["agent_id"], a.id);
    let (site_id, site_secret) = app.cc_client("").await;
    let r = ok(a
        .token(
            &app,
            &[("grant_type", PASSPORT), ("audience", &site_id)],
            None,
        )
        .await);
    let for_site = r["access_token"].as_str().unwrap();
    // Without a proof, bound to the key that signed the assertion.
    assert_ne!(jwt_parts(for_site).1["cnf"]["jkt"], claims["cnf"]["jkt"]);
    assert_eq!(
        app.introspect_as(&site_id, &site_secret, for_site).await["active"],
        true
    );
    assert_eq!(
        app.introspect_as(&site_id, &site_secret, passport).await,
        json!({"active": false})
    );

    // The agent revokes a passport (RFC 7009): inactive from then on; a
    // revocation by anyone else does nothing.
    let r = app
        .post_form(
            "/revoke",
            &[
                ("token", for_site),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &a.assertion(&app)),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.introspect(for_site).await, json!({"active": false}));
    let r = app
        .post_form(
            "/revoke",
            &[("token", passport)],
            Some((&site_id, &site_secret)),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.introspect(passport).await["active"], true);

    // A scope the agent lacks; a site that is neither a URI nor a client;
    // a client that is not an agent.
    a.token(&app, &[("grant_type", PASSPORT), ("scope", "admin")], None)
        .await
        .assert_error(400, "invalid_scope");
    a.token(
        &app,
        &[("grant_type", PASSPORT), ("audience", "not a site")],
        None,
    )
    .await
    .assert_error(400, "invalid_target");
    let key = client_key("plain");
    let reg = app
        .register(
            json!({"grant_types": [PASSPORT], "token_endpoint_auth_method": "private_key_jwt",
                         "jwks": {"keys": [key.jwk]}}),
        )
        .await;
    let id = reg["client_id"].as_str().unwrap();
    let assertion = key.assertion(json!({"iss": id, "sub": id, "aud": ISSUER, "jti": "p1",
                                          "iat": app.now(), "exp": app.now() + 60}));
    app.post_form(
        "/token",
        &[
            ("grant_type", PASSPORT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
        ],
        None,
    )
    .await
    .assert_error(400, "unauthorized_client");
}
crate::both!(passports);

/// A user's access token for the agent, exchanged by the agent for a
/// token for one resource: `act` names the agent, scope never widens, the
/// lifetime never grows; every RFC 8693 failure is refused.
async fn token_exchange_delegates(app: TestApp) {
    let a = agent(&app, "alice", "read write", &[]).await;
    // Alice delegates to the agent through an ordinary client's consent.
    let client_id = public_client(&app).await;
    let browser = Browser::new(&app);
    browser.login("alice", PASSWORD).await;
    let (verifier, challenge) = pkce();
    let me = format!("{ISSUER}/agents/{}", a.id);
    let url = crate::code_flow::authorize_url(&client_id, &challenge, &[]).replace(
        &form_urlencoded::byte_serialize(MCP.as_bytes()).collect::<String>(),
        &form_urlencoded::byte_serialize(me.as_bytes()).collect::<String>(),
    );
    let code = get_code_at(&app, &browser, &url).await;
    let user_token = ok(exchange(&app, &client_id, &code, &verifier).await)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(jwt_parts(&user_token).1["aud"], me);

    let subject = [
        ("subject_token", user_token.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    let exchange_with = |extra: Vec<(&'static str, String)>| {
        let mut pairs: Vec<(&str, String)> = vec![("grant_type", EXCHANGE.into())];
        pairs.extend(subject.iter().map(|(k, v)| (*k, v.to_string())));
        pairs.extend(extra);
        pairs
    };
    let send = |pairs: Vec<(&'static str, String)>| {
        let a = &a;
        let app = &app;
        async move {
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            a.token(app, &refs, None).await
        }
    };
    let t = ok(send(exchange_with(vec![("resource", MCP.into())])).await);
    assert_eq!(t["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "read");
    let (_, claims) = jwt_parts(t["access_token"].as_str().unwrap());
    assert_eq!(
        claims["sub"],
        owner_id(&app, "alice").await,
        "acts for alice"
    );
    assert_eq!(claims["act"]["sub"], a.id);
    assert_eq!(claims["agent_id"], a.id);
    assert_eq!(claims["client_id"], a.id);
    assert_eq!(claims["aud"], MCP);
    assert!(claims["exp"].as_i64().unwrap() <= jwt_parts(&user_token).1["exp"].as_i64().unwrap());
    let delegated = t["access_token"].as_str().unwrap().to_string();
    let seen = app.introspect(&delegated).await;
    assert_eq!(seen["act"]["sub"], a.id);

    // Alice sees the delegation on her grants page and revokes it there:
    // the token turns inactive; another owner cannot revoke it.
    let page = browser.get("/account").await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    let jti = jwt_parts(&delegated).1["jti"].as_str().unwrap().to_string();
    assert!(
        html.contains(&jti) && html.contains("alice&#x27;s helper"),
        "{html}"
    );
    crate::code_flow::user(&app, "mallory").await;
    let mallory = Browser::new(&app);
    mallory.login("mallory", PASSWORD).await;
    let m_csrf = crate::code_flow::hidden(&mallory.get("/account").await, "csrf_token");
    mallory
        .post(
            "/account/revoke",
            &[
                ("csrf_token", &m_csrf),
                ("kind", "delegation"),
                ("id", &jti),
            ],
        )
        .await;
    assert_eq!(app.introspect(&delegated).await["active"], true);
    let csrf = crate::code_flow::hidden(&page, "csrf_token");
    let r = browser
        .post(
            "/account/revoke",
            &[("csrf_token", &csrf), ("kind", "delegation"), ("id", &jti)],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(app.introspect(&delegated).await["active"], false);
    let html = String::from_utf8_lossy(&browser.get("/account").await.body).to_string();
    assert!(!html.contains(&jti));
    app.audit_events_with(&["delegation.revoked"]).await;

    // Wider scope than the subject token; an unregistered target; no
    // subject; a subject token for someone else.
    send(exchange_with(vec![
        ("resource", MCP.into()),
        ("scope", "read write".into()),
    ]))
    .await
    .assert_error(400, "invalid_scope");
    send(exchange_with(vec![(
        "resource",
        "https://evil.example/".into(),
    )]))
    .await
    .assert_error(400, "invalid_target");
    a.token(&app, &[("grant_type", EXCHANGE), ("resource", MCP)], None)
        .await
        .assert_error(400, "invalid_request");
    let (_, _, foreign) = app.access_token("read").await;
    a.token(
        &app,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &foreign),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_request");
    a.token(
        &app,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", "garbage"),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_request");
}
crate::both!(token_exchange_delegates);

/// Signs `claims` as an access token with the server's own key (to build
/// subject tokens carrying `may_act` or long `act` chains).
fn mint(app: &TestApp, claims: Value) -> String {
    let keys = app.state.tokens.keys.current();
    keys.signer(app.now())
        .unwrap()
        .sign("at+jwt", &claims)
        .unwrap()
}

/// `may_act` is honoured; the chain depth is limited; a passport from an
/// agent of another owner is refused, one from the same owner delegates.
async fn exchange_limits(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    let b = agent(&app, "alice", "read", &[]).await;
    let mallory = agent(&app, "mallory", "read", &[]).await;
    let me = format!("{ISSUER}/agents/{}", a.id);
    let (client_id, _) = app.cc_client("read").await;
    let base = |extra: Value| {
        let mut c = json!({"iss": ISSUER, "sub": "user-1", "aud": me, "client_id": client_id,
                           "scope": "read", "jti": agentauth::crypto::random_id().unwrap(),
                           "iat": app.now(), "exp": app.now() + 600});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let try_exchange = |subject: String, token_type: &'static str, who: &Agent| {
        let app = &app;
        let who_id = who.id.clone();
        let assertion = who.assertion(app);
        async move {
            let _ = who_id;
            app.post_form(
                "/token",
                &[
                    ("grant_type", EXCHANGE),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                    ("subject_token", &subject),
                    ("subject_token_type", token_type),
                    ("resource", MCP),
                ],
                None,
            )
            .await
        }
    };
    // may_act naming another agent.
    let t = mint(&app, base(json!({"may_act": {"sub": b.id}})));
    try_exchange(t, ACCESS_TOKEN_TYPE, &a)
        .await
        .assert_error(400, "invalid_request");
    let t = mint(&app, base(json!({"may_act": {"sub": a.id}})));
    ok(try_exchange(t, ACCESS_TOKEN_TYPE, &a).await);
    // Three actors already: a fourth exceeds the default depth of 3.
    let chain = json!({"act": {"sub": "x", "act": {"sub": "y", "act": {"sub": "z"}}}});
    let t = mint(&app, base(chain));
    let body = try_exchange(t, ACCESS_TOKEN_TYPE, &a)
        .await
        .assert_error(400, "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("exceed")
    );
    let two = json!({"act": {"sub": "x", "act": {"sub": "y"}}});
    let t = ok(try_exchange(mint(&app, base(two)), ACCESS_TOKEN_TYPE, &a).await);
    let (_, claims) = jwt_parts(t["access_token"].as_str().unwrap());
    assert_eq!(claims["act"]["sub"], a.id);
    assert_eq!(claims["act"]["act"]["sub"], "x", "nested chain kept");

    // A's passport naming B: B acts for A. Mallory's agent may not.
    let p = ok(a
        .token(&app, &[("grant_type", PASSPORT), ("audience", &b.id)], None)
        .await);
    let passport = p["access_token"].as_str().unwrap().to_string();
    let t = ok(try_exchange(passport.clone(), PASSPORT_TYPE, &b).await);
    let (_, claims) = jwt_parts(t["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], a.id);
    assert_eq!(claims["act"]["sub"], b.id);
    try_exchange(passport, PASSPORT_TYPE, &mallory)
        .await
        .assert_error(400, "invalid_request");
}
crate::both!(exchange_limits);

/// The kill switch: disabled from elsewhere (the CLI's write, no cache
/// invalidation here), the agent's tokens, passports and the tokens
/// derived through it turn inactive within a second, and its grants are
/// refused; enabling it again restores them.
async fn kill_switch(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    let b = agent(&app, "alice", "read", &[]).await;
    let at = ok(a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await);
    let at = at["access_token"].as_str().unwrap().to_string();
    let p = ok(a
        .token(&app, &[("grant_type", PASSPORT), ("audience", &b.id)], None)
        .await);
    let passport = p["access_token"].as_str().unwrap().to_string();
    let derived = ok(b
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
        .await);
    let derived = derived["access_token"].as_str().unwrap().to_string();
    for t in [&at, &passport, &derived] {
        assert_eq!(app.introspect(t).await["active"], true);
    }

    let started = Instant::now();
    set_agent_active(&app, &a.id, false).await;
    loop {
        let mut all_off = true;
        for t in [&at, &passport, &derived] {
            all_off &= app.introspect(t).await["active"] == false;
        }
        if all_off {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still active after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The kill revoked its tokens by index too, so introspection may say
    // inactive before this node's cached view of the agent (a second at
    // most) refuses its grants.
    loop {
        let r = a
            .token(&app, &[("grant_type", "client_credentials")], None)
            .await;
        if r.status == 401 {
            r.assert_error(401, "invalid_client");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "grants still answered after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = app.audit_events_with(&["agent.disabled"]).await;
    assert!(events.iter().any(|e| e == "agent.disabled"));

    // Enabling it again brings back nothing it held (boundary_kill.rs).
    app.state.forget_agent(&a.id).await;
    set_agent_active(&app, &a.id, true).await;
    app.state.forget_agent(&a.id).await;
    assert_eq!(app.introspect(&at).await["active"], false);

    // Deleting the owner takes the agent and its tokens with it.
    store::users::delete(
        &app.state.db,
        "alice",
        app.now(),
        store::users::deleted_event(app.now(), "test"),
    )
    .await
    .unwrap();
    app.state.forget_agent(&a.id).await;
    assert_eq!(app.introspect(&at).await["active"], false);
    assert!(
        store::agents::get(&app.state.db, &a.id)
            .await
            .unwrap()
            .is_none()
    );
}
crate::both!(kill_switch);

/// Kill switch across two nodes on one PostgreSQL: disabled at A,
/// inactive at B (the one-second bound is measured by bench/killswitch.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_reaches_the_other_node() {
    let (node_a, node_b) = crate::helpers::spawn_pg_nodes().await;
    let a = agent(&node_a, "alice", "read", &[]).await;
    let at = ok(a
        .token(
            &node_b,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            None,
        )
        .await);
    let at = at["access_token"].as_str().unwrap().to_string();
    assert_eq!(node_b.introspect(&at).await["active"], true);
    let started = Instant::now();
    set_agent_active(&node_a, &a.id, false).await;
    node_a.state.forget_agent(&a.id).await;
    assert_eq!(
        node_a.introspect(&at).await["active"],
        false,
        "at once on A"
    );
    while node_b.introspect(&at).await["active"] == true {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "B still active after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// DCR with an initial access token that names an owner registers an
/// agent of that owner (with its public keys, no secret).
async fn registration_with_an_owner_token_creates_an_agent(app: TestApp) {
    user(&app, "alice").await;
    let token = agentauth::crypto::random_token().unwrap();
    store::initial_tokens::insert(
        &app.state.db,
        agentauth::crypto::sha256(token.as_bytes()),
        app.now(),
        None,
        Some(1),
        Some(owner_id(&app, "alice").await),
    )
    .await
    .unwrap();
    let key = client_key("reg-key");
    // Keys are required, and must be Ed25519 or P-256 (checked before the token is spent).
    let r = app
        .json_request(
            "POST",
            "/register",
            &json!({"client_name": "ci bot"}),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_client_metadata");
    let mut private = key.jwk.clone();
    private["d"] = json!("AAAA");
    let rsa = json!({"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"});
    for bad in [private, rsa] {
        let r = app
            .json_request(
                "POST",
                "/register",
                &json!({"client_name": "ci bot", "jwks": {"keys": [bad]}}),
                Some(&token),
            )
            .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"], "invalid_client_metadata");
    }
    let r = app
        .json_request(
            "POST",
            "/register",
            &json!({"client_name": "ci bot", "scope": "read", "jwks": {"keys": [key.jwk]},
                    "token_endpoint_auth_method": "private_key_jwt"}),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let reg = r.json();
    let id = reg["agent_id"].as_str().unwrap();
    assert_eq!(reg["client_id"], id);
    assert_eq!(reg["owner"], owner_id(&app, "alice").await);
    assert!(reg.get("client_secret").is_none() && reg.get("registration_access_token").is_none());
    let a = Agent {
        id: id.to_string(),
        key,
    };
    let t = ok(a
        .token(&app, &[("grant_type", "client_credentials")], None)
        .await);
    assert_eq!(
        jwt_parts(t["access_token"].as_str().unwrap()).1["agent_id"],
        id
    );
}
crate::both!(registration_with_an_owner_token_creates_an_agent);
