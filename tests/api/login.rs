//! Proof-of-work login (issue 15): a site asks an agent to log in; the
//! agent solves the challenge and approves or denies; the site learns the
//! outcome by SSE (listening before or after) or by polling `/token`, and
//! gets the agent's passport exactly once.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::agents::{Agent, agent};
use crate::dpop::ProofKey;
use crate::helpers::{ISSUER, TestApp, TestResponse, basic, jwt_parts};

const POW_LOGIN: &str = "urn:agentauth:params:grant-type:pow-login";
const PASSPORT: &str = "urn:agentauth:params:grant-type:passport";

/// A site (a confidential client allowed the pow-login grant).
pub(crate) async fn site(app: &TestApp, name: &str) -> (String, String) {
    let reg = app
        .register(json!({
            "client_name": name,
            "client_uri": "https://site.example.com/",
            "grant_types": [POW_LOGIN],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await;
    (
        reg["client_id"].as_str().unwrap().to_string(),
        reg["client_secret"].as_str().unwrap().to_string(),
    )
}

/// An agent with a passport bound to its DPoP key.
pub(crate) struct LoggingAgent {
    pub(crate) agent: Agent,
    pub(crate) key: ProofKey,
    pub(crate) passport: String,
}

pub(crate) async fn logging_agent(app: &TestApp, owner: &str) -> LoggingAgent {
    let key = ProofKey::new();
    let agent = agent(app, owner, "read write", std::slice::from_ref(&key.jwk)).await;
    let r = agent
        .token(app, &[("grant_type", PASSPORT)], Some(&key.proof(app)))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let passport = r.json()["access_token"].as_str().unwrap().to_string();
    LoggingAgent {
        agent,
        key,
        passport,
    }
}

impl LoggingAgent {
    fn request(
        &self,
        app: &TestApp,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Request<Body> {
        let mut claims = self
            .key
            .claims(method, &format!("{ISSUER}{path}"), app.now());
        claims["ath"] = agentauth_resource::dpop::ath(&self.passport).into();
        let proof = self.key.sign(&self.key.header(), &claims);
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("DPoP {}", self.passport))
            .header("dpop", proof);
        match form {
            Some(pairs) => builder
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(crate::helpers::form(pairs)))
                .unwrap(),
            None => builder.body(Body::empty()).unwrap(),
        }
    }

    pub(crate) async fn challenge(&self, app: &TestApp, id: &str) -> TestResponse {
        app.send(self.request(app, "GET", &format!("/login-requests/{id}"), None))
            .await
    }

    async fn answer(
        &self,
        app: &TestApp,
        id: &str,
        verb: &str,
        pairs: &[(&str, &str)],
    ) -> TestResponse {
        app.send(self.request(
            app,
            "POST",
            &format!("/login-requests/{id}/{verb}"),
            Some(pairs),
        ))
        .await
    }

    /// Fetches a challenge, solves it, approves.
    pub(crate) async fn approve(&self, app: &TestApp, id: &str) -> TestResponse {
        let c = self.challenge(app, id).await;
        assert_eq!(c.status, 200, "{}", String::from_utf8_lossy(&c.body));
        let c = c.json();
        let challenge = c["challenge"].as_str().unwrap();
        let nonce =
            agentauth::agents::login::solve(challenge, c["difficulty"].as_u64().unwrap() as u32);
        self.answer(
            app,
            id,
            "approve",
            &[("challenge", challenge), ("nonce", &nonce)],
        )
        .await
    }
}

async fn create(app: &TestApp, site: &(String, String), extra: &[(&str, &str)]) -> Value {
    let r = app
        .post_form("/login-requests", extra, Some((&site.0, &site.1)))
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// A new login request's id.
pub(crate) async fn create_id(
    app: &TestApp,
    site: &(String, String),
    extra: &[(&str, &str)],
) -> String {
    create(app, site, extra).await["login_request_id"]
        .as_str()
        .unwrap()
        .to_string()
}

pub(crate) async fn poll(app: &TestApp, site: &(String, String), id: &str) -> TestResponse {
    app.post_form(
        "/token",
        &[("grant_type", POW_LOGIN), ("login_request_id", id)],
        Some((&site.0, &site.1)),
    )
    .await
}

/// Opens the site's event stream and reads it to its end (in a task).
pub(crate) fn listen(
    app: &TestApp,
    site: &(String, String),
    id: &str,
) -> tokio::task::JoinHandle<(u16, String)> {
    let router = app.router.clone();
    let request = Request::get(format!("/login-requests/{id}/events"))
        .header(header::AUTHORIZATION, basic(&site.0, &site.1))
        .body(Body::empty())
        .unwrap();
    tokio::spawn(async move {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).to_string())
    })
}

/// The `outcome` event's data.
pub(crate) fn outcome(stream: &str) -> Value {
    let data = stream
        .split("\n\n")
        .find(|e| e.contains("event: outcome"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .unwrap_or_else(|| panic!("no outcome event in {stream:?}"));
    serde_json::from_str(data).unwrap()
}

fn check_passport(passport: &str, agent: &LoggingAgent, site: &str) {
    let (header, claims) = jwt_parts(passport);
    assert_eq!(header["typ"], "agent-passport+jwt");
    assert_eq!(claims["sub"], agent.agent.id);
    assert_eq!(claims["aud"], site, "aud is the site");
    assert_eq!(
        claims["cnf"]["jkt"],
        agent.key.thumbprint(),
        "bound to the key the agent proved"
    );
    assert_eq!(claims["scope"], "read");
}

/// Polling: pending, slow_down, the challenge, approval, the passport
/// once; SSE listening first and after; a reconnect after delivery.
async fn login_by_polling_and_by_sse(app: TestApp) {
    let site = site(&app, "Example Site").await;
    let a = logging_agent(&app, "alice").await;

    let req = create(&app, &site, &[("scope", "read")]).await;
    let id = req["login_request_id"].as_str().unwrap();
    assert_eq!(req["expires_in"], 300);
    assert_eq!(req["interval"], 5);
    poll(&app, &site, id)
        .await
        .assert_error(400, "authorization_pending");
    poll(&app, &site, id).await.assert_error(400, "slow_down");
    let c = a.challenge(&app, id).await.json();
    assert_eq!(c["difficulty"], 15);
    assert_eq!(c["site"]["name"], "Example Site");
    assert_eq!(c["scope"], "read");
    let r = a.approve(&app, id).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    app.clock.advance(5);
    let t = poll(&app, &site, id).await;
    assert_eq!(t.status, 200, "{}", String::from_utf8_lossy(&t.body));
    let t = t.json();
    assert_eq!(
        t["issued_token_type"],
        "urn:agentauth:params:token-type:passport"
    );
    check_passport(t["access_token"].as_str().unwrap(), &a, &site.0);
    app.clock.advance(5);
    poll(&app, &site, id)
        .await
        .assert_error(400, "invalid_grant");

    // SSE, listening before the approval.
    let id = create_id(&app, &site, &[("scope", "read")]).await;
    let stream = listen(&app, &site, &id);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stream.is_finished(), "waits for the outcome");
    assert_eq!(a.approve(&app, &id).await.status, 200);
    let (status, body) = tokio::time::timeout(Duration::from_secs(3), stream)
        .await
        .expect("the approval wakes the stream")
        .unwrap();
    assert_eq!(status, 200);
    let event = outcome(&body);
    assert_eq!(event["status"], "approved");
    check_passport(event["passport"].as_str().unwrap(), &a, &site.0);
    // A reconnect learns the outcome, not a second passport; polling too.
    let (_, again) = listen(&app, &site, &id).await.unwrap();
    let event = outcome(&again);
    assert_eq!(event["status"], "approved");
    assert_eq!(event["delivered"], true);
    assert!(event.get("passport").is_none());
    poll(&app, &site, &id)
        .await
        .assert_error(400, "invalid_grant");

    // SSE, listening after the approval.
    let id = create_id(&app, &site, &[("scope", "read")]).await;
    assert_eq!(a.approve(&app, &id).await.status, 200);
    let (_, body) = listen(&app, &site, &id).await.unwrap();
    check_passport(outcome(&body)["passport"].as_str().unwrap(), &a, &site.0);
}
crate::both!(login_by_polling_and_by_sse);

/// Deny; expiry; too few zero bits; a reused challenge; approval after
/// expiry; another site's request; an agent the site did not name; a
/// passport without its proof.
async fn refusals(app: TestApp) {
    let site = site(&app, "Example Site").await;
    let other_site = site_named(&app).await;
    let a = logging_agent(&app, "alice").await;
    let b = logging_agent(&app, "bob").await;

    // Deny.
    let id = create_id(&app, &site, &[]).await;
    let c = a.challenge(&app, &id).await.json();
    let r = a
        .answer(
            &app,
            &id,
            "deny",
            &[("challenge", c["challenge"].as_str().unwrap())],
        )
        .await;
    assert_eq!(r.status, 200);
    poll(&app, &site, &id)
        .await
        .assert_error(400, "access_denied");
    let (_, body) = listen(&app, &site, &id).await.unwrap();
    assert_eq!(outcome(&body)["status"], "denied");

    // Too few zero bits; the difficulty the agent claims is not read.
    let id = create_id(&app, &site, &[]).await;
    let c = a.challenge(&app, &id).await.json();
    let challenge = c["challenge"].as_str().unwrap().to_string();
    let weak = (0u64..)
        .map(|n| n.to_string())
        .find(|n| !agentauth::agents::login::solves(&challenge, n, 15))
        .unwrap();
    a.answer(
        &app,
        &id,
        "approve",
        &[
            ("challenge", &challenge),
            ("nonce", &weak),
            ("difficulty", "0"),
        ],
    )
    .await
    .assert_error(400, "invalid_request");
    // A stale challenge after a new one was fetched.
    let fresh = a.challenge(&app, &id).await.json();
    let old_nonce = agentauth::agents::login::solve(&challenge, 15);
    a.answer(
        &app,
        &id,
        "approve",
        &[("challenge", &challenge), ("nonce", &old_nonce)],
    )
    .await
    .assert_error(400, "invalid_request");
    // The current one works once; reusing it is refused.
    let challenge = fresh["challenge"].as_str().unwrap();
    let nonce = agentauth::agents::login::solve(challenge, 15);
    assert_eq!(
        a.answer(
            &app,
            &id,
            "approve",
            &[("challenge", challenge), ("nonce", &nonce)]
        )
        .await
        .status,
        200
    );
    let r = a
        .answer(
            &app,
            &id,
            "approve",
            &[("challenge", challenge), ("nonce", &nonce)],
        )
        .await;
    assert_eq!(
        r.assert_error(400, "invalid_request")["error_description"],
        "the login request was already answered"
    );

    // Another site can neither poll nor listen to it.
    poll(&app, &other_site, &id)
        .await
        .assert_error(400, "invalid_grant");
    let (status, _) = listen(&app, &other_site, &id).await.unwrap();
    assert_eq!(status, 404);

    // A request naming agent A is invisible to agent B.
    let id = create_id(&app, &site, &[("agent", &a.agent.id)]).await;
    assert_eq!(b.challenge(&app, &id).await.status, 404);
    assert_eq!(a.challenge(&app, &id).await.status, 200);

    // Expiry: polling says so, approving is refused, SSE says so.
    let id = create_id(&app, &site, &[]).await;
    let c = a.challenge(&app, &id).await.json();
    app.clock.advance(301);
    poll(&app, &site, &id)
        .await
        .assert_error(400, "expired_token");
    let challenge = c["challenge"].as_str().unwrap();
    let nonce = agentauth::agents::login::solve(challenge, 15);
    let r = a
        .answer(
            &app,
            &id,
            "approve",
            &[("challenge", challenge), ("nonce", &nonce)],
        )
        .await;
    assert_eq!(
        r.assert_error(400, "invalid_request")["error_description"],
        "the login request expired"
    );
    let (_, body) = listen(&app, &site, &id).await.unwrap();
    assert_eq!(outcome(&body)["status"], "expired");

    // A passport without a proof, or a proof by another key.
    let id = create_id(&app, &site, &[]).await;
    let r = app
        .send(
            Request::get(format!("/login-requests/{id}"))
                .header(header::AUTHORIZATION, format!("DPoP {}", a.passport))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    r.assert_error(400, "invalid_dpop_proof");
    let thief = LoggingAgent {
        agent: Agent {
            id: a.agent.id.clone(),
            key: crate::private_key_jwt::client_key("x"),
        },
        key: ProofKey::new(),
        passport: a.passport.clone(),
    };
    thief
        .challenge(&app, &id)
        .await
        .assert_error(400, "invalid_dpop_proof");
    // Anonymous sites cannot create requests.
    app.post_form("/login-requests", &[], None)
        .await
        .assert_error(401, "invalid_client");
}
crate::both!(refusals);

async fn site_named(app: &TestApp) -> (String, String) {
    site(app, "Other Site").await
}

/// 64 approvals of one request at once: exactly one wins (SECURITY.md,
/// "Proof-of-work login"), and the site gets exactly one passport from 64 pollers.
async fn one_approval_and_one_delivery_win(app: TestApp) {
    let site = site(&app, "Example Site").await;
    let a = logging_agent(&app, "alice").await;
    let id = create_id(&app, &site, &[]).await;
    let c = a.challenge(&app, &id).await.json();
    let challenge = c["challenge"].as_str().unwrap().to_string();
    let nonce = agentauth::agents::login::solve(&challenge, 15);
    let requests: Vec<_> = (0..64)
        .map(|_| {
            a.request(
                &app,
                "POST",
                &format!("/login-requests/{id}/approve"),
                Some(&[("challenge", &challenge), ("nonce", &nonce)]),
            )
        })
        .collect();
    let results = futures_util::future::join_all(requests.into_iter().map(|r| app.send(r))).await;
    let wins = results.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        wins,
        1,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(results.iter().all(|r| r.status == 200 || r.status == 400));

    let listeners: Vec<_> = (0..32).map(|_| listen(&app, &site, &id)).collect();
    let mut passports = 0;
    for l in listeners {
        let (_, body) = l.await.unwrap();
        if outcome(&body).get("passport").is_some() {
            passports += 1;
        }
    }
    assert_eq!(passports, 1, "the passport goes out once");
}
crate::both!(one_approval_and_one_delivery_win);

/// Two nodes on one PostgreSQL: a site listening on node B hears an
/// approval made on node A at once (LISTEN/NOTIFY, not the periodic re-read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_on_one_node_hears_an_approval_on_another() {
    let (a_node, b_node) = crate::helpers::spawn_pg_nodes().await;
    let site = site(&a_node, "Example Site").await;
    let agent = logging_agent(&a_node, "alice").await;
    let id = create_id(&a_node, &site, &[]).await;
    let stream = listen(&b_node, &site, &id);
    // Let the stream read its row and start waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stream.is_finished());
    let approved = Instant::now();
    assert_eq!(agent.approve(&a_node, &id).await.status, 200);
    let (_, body) = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .unwrap()
        .unwrap();
    let waited = approved.elapsed();
    assert!(outcome(&body).get("passport").is_some(), "{body}");
    assert!(
        waited < Duration::from_secs(2),
        "woken by NOTIFY, not the re-read: {waited:?}"
    );
}

/// SECURITY.md, "Proof-of-work login": event streams are capped per address; a closed
/// stream frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_address() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    let site = site(&app, "Example Site").await;
    let id = create_id(&app, &site, &[]).await;
    let cap = agentauth::http::login_requests::MAX_STREAMS_PER_ADDRESS as usize;
    let streams: Vec<_> = (0..cap).map(|_| listen(&app, &site, &id)).collect();
    for _ in 0..100 {
        if app
            .state
            .agents
            .login_streams
            .lock()
            .unwrap()
            .values()
            .sum::<u32>() as usize
            == cap
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = listen(&app, &site, &id).await.unwrap();
    assert_eq!(status, 429, "one stream too many");
    for s in &streams {
        s.abort();
    }
    for s in streams {
        let _ = s.await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        app.state
            .agents
            .login_streams
            .lock()
            .unwrap()
            .values()
            .sum::<u32>(),
        0,
        "slots freed"
    );
}

/// `--registration pow`: open registration needs a stamp for its exact
/// body; missing, reused, wrong-body and too-easy stamps are refused; an
/// initial access token still registers without one; a flood from one
/// address sees the difficulty rise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pow_gated_registration() {
    use base64::Engine as _;
    let mut args = crate::helpers::serve_args();
    args.registration = agentauth::config::RegistrationMode::Pow;
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, args).await;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let body = json!({"client_name": "MCP client", "redirect_uris": ["http://127.0.0.1/cb"],
                      "token_endpoint_auth_method": "none"})
    .to_string();
    let register = |body: String, stamp: Option<String>| {
        let mut req = Request::post("/register").header(header::CONTENT_TYPE, "application/json");
        if let Some(s) = stamp {
            req = req.header("pow-stamp", s);
        }
        app.send(req.body(Body::from(body)).unwrap())
    };
    let solve_for = |challenge: &str, body: &str, bits: u32| {
        let h = b64(&agentauth::crypto::sha256(body.as_bytes()));
        (0u64..)
            .map(|n| n.to_string())
            .find(|n| {
                let input = format!("{challenge}{h}{n}");
                agentauth::agents::login::leading_zero_bits(&agentauth::crypto::sha256(
                    input.as_bytes(),
                )) >= bits
            })
            .unwrap()
    };

    let r = register(body.clone(), None).await;
    let e = r.assert_error(400, "invalid_request");
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("/register/challenge")
    );

    let c = app.get("/register/challenge").await.json();
    let challenge = c["challenge"].as_str().unwrap().to_string();
    let bits = c["difficulty"].as_u64().unwrap() as u32;
    assert_eq!(bits, 15);
    let nonce = solve_for(&challenge, &body, bits);
    // The same stamp for another body does not solve (with overwhelming odds).
    let other = body.replace("MCP client", "Other client");
    if agentauth::agents::login::leading_zero_bits(&agentauth::crypto::sha256(
        format!(
            "{challenge}{}{nonce}",
            b64(&agentauth::crypto::sha256(other.as_bytes()))
        )
        .as_bytes(),
    )) < bits
    {
        register(other, Some(format!("{challenge}:{nonce}")))
            .await
            .assert_error(400, "invalid_request");
    }
    // Too easy: a nonce that does not reach the difficulty.
    let weak = (0u64..)
        .map(|n| n.to_string())
        .find(|n| {
            let input = format!(
                "{challenge}{}{n}",
                b64(&agentauth::crypto::sha256(body.as_bytes()))
            );
            agentauth::agents::login::leading_zero_bits(&agentauth::crypto::sha256(
                input.as_bytes(),
            )) < bits
        })
        .unwrap();
    register(body.clone(), Some(format!("{challenge}:{weak}")))
        .await
        .assert_error(400, "invalid_request");
    // Malformed stamps.
    for bad in [
        "no-colon",
        ":",
        "a.b:1",
        &format!("{challenge}:{}", "1".repeat(65)),
    ] {
        register(body.clone(), Some(bad.to_string()))
            .await
            .assert_error(400, "invalid_request");
    }
    // A forged challenge (our MAC does not match).
    let forged = format!("{}x:{nonce}", challenge);
    register(body.clone(), Some(forged))
        .await
        .assert_error(400, "invalid_request");
    // The good stamp registers once; the second use is refused.
    let r = register(body.clone(), Some(format!("{challenge}:{nonce}"))).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let e = register(body.clone(), Some(format!("{challenge}:{nonce}")))
        .await
        .assert_error(400, "invalid_request");
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    // An expired challenge.
    let c = app.get("/register/challenge").await.json();
    let late = c["challenge"].as_str().unwrap().to_string();
    let nonce = solve_for(&late, &body, c["difficulty"].as_u64().unwrap() as u32);
    app.clock.advance(301);
    let e = register(body.clone(), Some(format!("{late}:{nonce}")))
        .await
        .assert_error(400, "invalid_request");
    assert!(e["error_description"].as_str().unwrap().contains("expired"));
    // An initial access token needs no stamp.
    let token = app.initial_token().await;
    let r = app
        .send(
            Request::post("/register")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 201);
    // A flood from one address: the difficulty rises.
    let mut last = 0;
    for _ in 0..40 {
        last = app.get("/register/challenge").await.json()["difficulty"]
            .as_u64()
            .unwrap();
    }
    assert!(last >= 17, "difficulty after a flood: {last}");
}

/// Bad input at every login-request endpoint, and at the pow-login grant
/// and the registration challenge, gets a standards-shaped 4xx.
async fn malformed_requests_get_standard_errors(app: TestApp) {
    let site = site(&app, "Example Site").await;
    let a = logging_agent(&app, "alice").await;
    let auth = Some((site.0.as_str(), site.1.as_str()));
    app.post_form("/login-requests", &[("scope", "read \"quoted\"")], auth)
        .await
        .assert_error(400, "invalid_scope");
    app.post_form("/login-requests", &[("agent", "agent-nobody")], auth)
        .await
        .assert_error(400, "invalid_request");
    app.post_form("/login-requests", &[], Some((&site.0, "wrong secret")))
        .await
        .assert_error(401, "invalid_client");

    // The agent: unknown request, wrong scheme, two Authorization headers,
    // missing or oversized parameters.
    assert_eq!(a.challenge(&app, "no-such-request").await.status, 404);
    let id = create_id(&app, &site, &[]).await;
    let mut bearer = a.request(&app, "GET", &format!("/login-requests/{id}"), None);
    bearer.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {}", a.passport).parse().unwrap(),
    );
    app.send(bearer).await.assert_error(401, "invalid_token");
    let mut twice = a.request(&app, "GET", &format!("/login-requests/{id}"), None);
    twice
        .headers_mut()
        .append(header::AUTHORIZATION, "Basic eDp5".parse().unwrap());
    app.send(twice).await.assert_error(400, "invalid_request");
    let c = a.challenge(&app, &id).await.json();
    let challenge = c["challenge"].as_str().unwrap();
    a.answer(&app, &id, "approve", &[("nonce", "1")])
        .await
        .assert_error(400, "invalid_request");
    a.answer(&app, &id, "approve", &[("challenge", challenge)])
        .await
        .assert_error(400, "invalid_request");
    let long = "9".repeat(65);
    a.answer(
        &app,
        &id,
        "approve",
        &[("challenge", challenge), ("nonce", &long)],
    )
    .await
    .assert_error(400, "invalid_request");
    a.answer(&app, &id, "deny", &[])
        .await
        .assert_error(400, "invalid_request");

    // The polling grant.
    app.post_form(
        "/token",
        &[("grant_type", POW_LOGIN)],
        Some((&site.0, &site.1)),
    )
    .await
    .assert_error(400, "invalid_request");
    poll(&app, &site, "no-such-request")
        .await
        .assert_error(400, "invalid_grant");
    // A public client may not register the grant (a site is confidential).
    let token = app.initial_token().await;
    let r = app
        .json_request(
            "POST",
            "/register",
            &json!({"grant_types": [POW_LOGIN], "token_endpoint_auth_method": "none"}),
            Some(&token),
        )
        .await;
    r.assert_error(400, "invalid_client_metadata");

    // No proof of work needed here: the challenge endpoint says so.
    assert_eq!(app.get("/register/challenge").await.status, 404);
}
crate::both!(malformed_requests_get_standard_errors);
