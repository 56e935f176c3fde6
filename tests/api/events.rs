//! Security events for sessions (issue 31 item 4): an OpenID SSF 1.0
//! transmitter pushing CAEP 1.0 events as RFC 8417 SETs by RFC 8935 to
//! receivers an operator registered. Each receiver here is a real HTTP
//! server on 127.0.0.1 inside the test; the SETs it gets are verified
//! against the server's JWKS like a site would.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentauth::events::Worker;
use agentauth::events::receivers::{self, NewReceiverRequest, ReceiverError};
use agentauth::store;
use agentauth::store::audit::AuditEvent;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use sea_orm::TransactionTrait;
use serde_json::{Value, json};

use crate::agents::{Agent, agent, set_agent_active};
use crate::both_with;
use crate::code_flow::{Browser, PASSWORD, hidden, user};
use crate::helpers::{Backend, ISSUER, TestApp, serve_args, spawn_app_keyed, spawn_app_with};

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const AUD: &str = "https://site.example.com/";

/// One push a receiver got.
#[derive(Clone, Debug)]
pub struct Push {
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub authorization: Option<String>,
    pub set: String,
}

/// A receiver: records every push and answers from its script (202 when
/// the script is empty).
#[derive(Clone, Default)]
pub struct Receiver {
    pub pushes: Arc<Mutex<Vec<Push>>>,
    pub script: Arc<Mutex<VecDeque<(u16, String)>>>,
    pub url: String,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    r.pushes.lock().unwrap().push(Push {
        content_type: h("content-type"),
        accept: h("accept"),
        authorization: h("authorization"),
        set: body,
    });
    let (status, body) = r
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((202, String::new()));
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

impl Receiver {
    /// Listens on `port` (0: any).
    pub async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = Receiver {
            url: format!("http://127.0.0.1:{port}/events"),
            ..Default::default()
        };
        let app = axum::Router::new()
            .route("/events", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    pub fn sets(&self) -> Vec<String> {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.set.clone())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.pushes.lock().unwrap().len()
    }
}

/// Polls `done` until it holds (at most 20 s).
pub async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited 20 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the async `done` until it holds (at most 20 s).
pub async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited 20 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server with the test-only insecure switch (so that a loopback http
/// receiver may be registered) and its event worker running.
pub struct EventsApp {
    pub app: TestApp,
    pub worker: Worker,
}

impl Drop for EventsApp {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

async fn events_app(backend: Backend) -> EventsApp {
    let mut args = serve_args();
    args.insecure_fetch = true;
    let app = spawn_app_with(backend, args).await;
    let worker = agentauth::events::spawn(app.state.events.clone());
    EventsApp { app, worker }
}

/// A server with the SSRF guards on, its worker running.
async fn guarded_app(backend: Backend) -> EventsApp {
    let app = spawn_app_with(backend, serve_args()).await;
    let worker = agentauth::events::spawn(app.state.events.clone());
    EventsApp { app, worker }
}

async fn register(app: &TestApp, url: &str, authorization: Option<&str>) -> String {
    receivers::add(
        &app.state.db,
        &app.state.events.seal_key,
        app.state.config.insecure_fetch,
        NewReceiverRequest {
            endpoint_url: url.into(),
            audience: AUD.into(),
            authorization: authorization.map(str::to_string),
        },
        app.now(),
        "test",
        None,
    )
    .await
    .unwrap()
}

/// Verifies a SET as a receiver must (RFC 8417, SSF 1.0 §4.1): our
/// signature by the JWKS, `typ` secevent+jwt, `iss`, `aud`; no `sub`,
/// no `exp`. Its claims.
pub async fn verify_set(app: &TestApp, set: &str, aud: &str) -> Value {
    let header = jsonwebtoken::decode_header(set).unwrap();
    assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    let jwks = app.get("/jwks.json").await.json();
    let kid = header.kid.clone().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[ISSUER]);
    v.validate_exp = false;
    v.required_spec_claims = ["iss".to_string(), "aud".to_string()].into();
    let claims = jsonwebtoken::decode::<Value>(set, &key, &v).unwrap().claims;
    assert!(
        claims.get("sub").is_none() && claims.get("exp").is_none(),
        "{claims}"
    );
    for c in ["iat", "jti", "txn", "sub_id", "events"] {
        assert!(claims.get(c).is_some(), "{c} missing: {claims}");
    }
    assert_eq!(claims["events"].as_object().unwrap().len(), 1, "{claims}");
    claims
}

fn iss_sub(sub: &str) -> Value {
    json!({ "format": "iss_sub", "iss": ISSUER, "sub": sub })
}

/// Disables an agent through the console, as its owner does.
async fn kill_in_console(app: &TestApp, a: &Agent) {
    let alice = Browser::new(app);
    alice.login("alice", PASSWORD).await;
    let confirm = alice
        .get(&format!("/account/agents/{}/confirm?action=disable", a.id))
        .await;
    let csrf = hidden(&confirm, "csrf_token");
    let r = alice
        .post(
            &format!("/account/agents/{}/disable", a.id),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 303);
}

/// The kill switch in the console: the receiver gets one session-revoked
/// SET about the agent, signed with our keys, for its `aud`, carrying the
/// authorization value it was registered with.
async fn a_kill_pushes_session_revoked(e: EventsApp) {
    let app = &e.app;
    let receiver = Receiver::start(0).await;
    register(app, &receiver.url, Some("Bearer receiver-s3cret")).await;
    let a = agent(app, "alice", "read", &[]).await;
    let killed_at = app.now();
    kill_in_console(app, &a).await;
    wait_for("the SET", || receiver.count() == 1).await;

    let push = receiver.pushes.lock().unwrap()[0].clone();
    assert_eq!(
        push.content_type.as_deref(),
        Some("application/secevent+jwt")
    );
    assert_eq!(push.accept.as_deref(), Some("application/json"));
    assert_eq!(
        push.authorization.as_deref(),
        Some("Bearer receiver-s3cret")
    );
    let claims = verify_set(app, &push.set, AUD).await;
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub_id"], iss_sub(&a.id));
    let event = &claims["events"][SESSION_REVOKED];
    assert_eq!(event["event_timestamp"], killed_at, "{claims}");
    assert_eq!(event["initiating_entity"], "user");
    // The other endpoints say nothing new: it stays one SET.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.count(), 1);
}
both_with!(events_app, a_kill_pushes_session_revoked);

/// Removing one of an agent's keys (as the CLI does): credential-change,
/// `change_type` revoke, naming the removed key; deleting the agent and
/// disabling one through the CLI path: session-revoked each.
async fn key_removal_pushes_credential_change(e: EventsApp) {
    let app = &e.app;
    let receiver = Receiver::start(0).await;
    register(app, &receiver.url, None).await;
    let extra = crate::private_key_jwt::client_key("k-stolen");
    let a = agent(app, "alice", "read", std::slice::from_ref(&extra.jwk)).await;
    let kept = agentauth::agents::check_key(&a.key.jwk).unwrap();
    agentauth::agents::set_keys(
        &app.state.db,
        app.state.grants.as_ref(),
        &a.id,
        jsonwebtoken::jwk::JwkSet { keys: vec![kept] },
        app.now(),
        "cli",
    )
    .await
    .unwrap();
    wait_for("the credential-change SET", || receiver.count() == 1).await;
    let claims = verify_set(app, &receiver.sets()[0], AUD).await;
    assert_eq!(claims["sub_id"], iss_sub(&a.id));
    let event = &claims["events"][CREDENTIAL_CHANGE];
    assert_eq!(event["change_type"], "revoke", "{claims}");
    assert_eq!(event["credential_type"], "jwk");
    assert_eq!(event["friendly_name"], "k-stolen");
    assert_eq!(event["initiating_entity"], "admin");
    assert!(event["jkt"].is_string() && event["event_timestamp"].is_i64());

    // Adding a key is no event.
    let more = crate::private_key_jwt::client_key("k-new");
    let keys = vec![
        agentauth::agents::check_key(&a.key.jwk).unwrap(),
        agentauth::agents::check_key(&more.jwk).unwrap(),
    ];
    agentauth::agents::set_keys(
        &app.state.db,
        app.state.grants.as_ref(),
        &a.id,
        jsonwebtoken::jwk::JwkSet { keys },
        app.now(),
        "cli",
    )
    .await
    .unwrap();
    // The CLI's kill (no wake on this node: the worker's poll finds it).
    set_agent_active(app, &a.id, false).await;
    wait_for("the session-revoked SET", || receiver.count() == 2).await;
    let claims = verify_set(app, &receiver.sets()[1], AUD).await;
    assert_eq!(
        claims["events"][SESSION_REVOKED]["initiating_entity"],
        "admin"
    );
    // Enabling is no event; deleting is.
    set_agent_active(app, &a.id, true).await;
    assert!(
        store::agents::delete(
            &app.state.db,
            &a.id,
            AuditEvent {
                at: app.now(),
                event: "agent.deleted",
                client_id: Some(a.id.clone()),
                subject: Some("cli".into()),
                ip: None,
                detail: json!({}),
            }
        )
        .await
        .unwrap()
    );
    wait_for("the deletion's SET", || receiver.count() == 3).await;
    let claims = verify_set(app, &receiver.sets()[2], AUD).await;
    assert_eq!(claims["sub_id"], iss_sub(&a.id));
    assert!(claims["events"][SESSION_REVOKED].is_object());
    let jtis: HashSet<String> = futures_jtis(&receiver.sets());
    assert_eq!(jtis.len(), 3);
}
both_with!(events_app, key_removal_pushes_credential_change);

fn futures_jtis(sets: &[String]) -> HashSet<String> {
    sets.iter()
        .map(|s| {
            crate::helpers::jwt_parts(s).1["jti"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A consent withdrawn: the user's sessions at that client (a complex
/// subject); a user deleted: the user and each of their agents.
async fn consent_and_user_deletion_push_session_revoked(e: EventsApp) {
    let app = &e.app;
    let receiver = Receiver::start(0).await;
    register(app, &receiver.url, None).await;
    let a = agent(app, "alice", "read", &[]).await;
    let alice = store::users::by_username(&app.state.db, "alice")
        .await
        .unwrap()
        .unwrap();
    store::grants::withdraw_consent(
        &app.state.db,
        &alice.id,
        "client-x",
        app.now(),
        AuditEvent {
            at: app.now(),
            event: "consent.withdrawn",
            client_id: Some("client-x".into()),
            subject: Some(alice.id.clone()),
            ip: None,
            detail: json!({}),
        },
    )
    .await
    .unwrap();
    wait_for("the consent SET", || receiver.count() == 1).await;
    let claims = verify_set(app, &receiver.sets()[0], AUD).await;
    assert_eq!(
        claims["sub_id"],
        json!({ "format": "complex", "user": iss_sub(&alice.id),
                "application": { "format": "opaque", "id": "client-x" } })
    );

    store::users::delete(
        &app.state.db,
        "alice",
        app.now(),
        store::users::deleted_event(app.now(), "cli"),
    )
    .await
    .unwrap()
    .unwrap();
    wait_for("the deletion SETs", || receiver.count() == 3).await;
    let mut subjects = Vec::new();
    let mut txns = HashSet::new();
    for set in &receiver.sets()[1..] {
        let claims = verify_set(app, set, AUD).await;
        subjects.push(claims["sub_id"]["sub"].as_str().unwrap().to_string());
        txns.insert(claims["txn"].as_str().unwrap().to_string());
    }
    subjects.sort();
    let mut expected = vec![alice.id.clone(), a.id.clone()];
    expected.sort();
    assert_eq!(subjects, expected);
    // One change, one `txn` (SSF 1.0 §4.1.9).
    assert_eq!(txns.len(), 1);
}
both_with!(events_app, consent_and_user_deletion_push_session_revoked);

/// RFC 8935 §2: a 500 is retried later with the very same SET `jti`; the
/// operator sees the error meanwhile.
async fn a_failed_push_is_retried_with_the_same_jti(e: EventsApp) {
    let app = &e.app;
    let receiver = Receiver::start(0).await;
    receiver
        .script
        .lock()
        .unwrap()
        .push_back((500, "{}".into()));
    let id = register(app, &receiver.url, None).await;
    let a = agent(app, "alice", "read", &[]).await;
    set_agent_active(app, &a.id, false).await;
    app.state.events.wake();
    wait_for("the first attempt", || receiver.count() == 1).await;
    wait_until("the failure recorded", || async {
        store::events::receivers(&app.state.db)
            .await
            .unwrap()
            .iter()
            .any(|r| r.row.id == id && r.row.last_error.is_some())
    })
    .await;
    let listed = store::events::receivers(&app.state.db).await.unwrap();
    assert_eq!(listed[0].pending, 1);
    assert_eq!(
        listed[0].row.last_error.as_deref(),
        Some("the receiver answered 500")
    );
    // Backing off: nothing before the retry time, even when woken.
    app.state.events.wake();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.count(), 1);
    // The clock passes the backoff (at most a second for the first retry).
    app.clock.advance(2);
    app.state.events.wake();
    wait_for("the retry", || receiver.count() == 2).await;
    let sets = receiver.sets();
    assert_eq!(
        futures_jtis(&sets).len(),
        1,
        "the retry carries the same jti"
    );
    verify_set(app, &sets[1], AUD).await;
    wait_until("the row delivered", || async {
        store::events::queued(&app.state.db, &id)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let listed = store::events::receivers(&app.state.db).await.unwrap();
    assert_eq!((listed[0].pending, listed[0].row.delivered), (0, 1));
}
both_with!(events_app, a_failed_push_is_retried_with_the_same_jti);

/// RFC 8935 §2.3: a 400 with an error object refuses that SET for good.
async fn a_refused_set_is_not_retried(e: EventsApp) {
    let app = &e.app;
    let receiver = Receiver::start(0).await;
    receiver.script.lock().unwrap().push_back((
        400,
        json!({"err": "invalid_audience", "description": "not for us"}).to_string(),
    ));
    let id = register(app, &receiver.url, None).await;
    let a = agent(app, "alice", "read", &[]).await;
    set_agent_active(app, &a.id, false).await;
    app.state.events.wake();
    wait_for("the attempt", || receiver.count() == 1).await;
    wait_until("the refusal recorded", || async {
        store::events::queued(&app.state.db, &id)
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.state == "failed")
    })
    .await;
    let rows = store::events::queued(&app.state.db, &id).await.unwrap();
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("refused: invalid_audience: not for us")
    );
    app.clock.advance(3600);
    app.state.events.wake();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), 1, "a refused SET is never sent again");
    let listed = store::events::receivers(&app.state.db).await.unwrap();
    assert_eq!((listed[0].pending, listed[0].failed), (0, 1));
}
both_with!(events_app, a_refused_set_is_not_retried);

/// A change that rolls back leaves no outbox row and sends nothing.
async fn a_rolled_back_change_emits_nothing(e: EventsApp) {
    let app = &e.app;
    let receiver = Receiver::start(0).await;
    let id = register(app, &receiver.url, None).await;
    let a = agent(app, "alice", "read", &[]).await;
    let txn = app.state.db.begin().await.unwrap();
    assert!(
        store::agents::set_active(
            &txn,
            &a.id,
            false,
            app.now(),
            AuditEvent {
                at: app.now(),
                event: "agent.disabled",
                client_id: Some(a.id.clone()),
                subject: Some("cli".into()),
                ip: None,
                detail: json!({}),
            },
        )
        .await
        .unwrap()
    );
    assert_eq!(store::events::queued(&txn, &id).await.unwrap().len(), 1);
    txn.rollback().await.unwrap();
    assert!(
        store::events::queued(&app.state.db, &id)
            .await
            .unwrap()
            .is_empty()
    );
    app.state.events.wake();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), 0);
    assert!(app.state.agents.is_active(&a.id).await.unwrap());
}
both_with!(events_app, a_rolled_back_change_emits_nothing);

/// The outbox outlives the server: the receiver is down, the node goes
/// away, a new node on the same database delivers exactly once.
async fn the_queue_survives_a_restart(backend: Backend) {
    let (url, schema, _dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
            (url, None, Some(dir))
        }
        Backend::Postgres => (
            crate::helpers::PG_URL.to_string(),
            Some(crate::helpers::fresh_schema().await),
            None,
        ),
    };
    let connect = || store::connect(&url, 4, schema.as_deref());
    let kek = agentauth::crypto::random_bytes::<32>().unwrap();
    let mut args = serve_args();
    args.insecure_fetch = true;
    let port = crate::processes::free_port();
    let receiver_url = format!("http://127.0.0.1:{port}/events");

    let first = spawn_app_keyed(backend, connect().await.unwrap(), None, args.clone(), kek).await;
    let worker = agentauth::events::spawn(first.state.events.clone());
    let id = register(&first, &receiver_url, Some("Bearer x")).await;
    let a = agent(&first, "alice", "read", &[]).await;
    set_agent_active(&first, &a.id, false).await;
    first.state.events.wake();
    wait_until("a failed attempt", || async {
        store::events::queued(&first.state.db, &id)
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.attempts > 0)
    })
    .await;
    worker.abort();
    drop(first);

    let receiver = Receiver::start(port).await;
    let second = spawn_app_keyed(backend, connect().await.unwrap(), None, args, kek).await;
    let worker = agentauth::events::spawn(second.state.events.clone());
    second.clock.advance(600);
    second.state.events.wake();
    wait_for("the SET after the restart", || receiver.count() == 1).await;
    let claims = verify_set(&second, &receiver.sets()[0], AUD).await;
    assert_eq!(claims["sub_id"], iss_sub(&a.id));
    assert_eq!(
        receiver.pushes.lock().unwrap()[0].authorization.as_deref(),
        Some("Bearer x")
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), 1);
    worker.abort();
}

mod the_queue_survives_a_restart {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::the_queue_survives_a_restart(crate::helpers::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::the_queue_survives_a_restart(crate::helpers::Backend::Postgres).await
    }
}

/// With the SSRF guards on: a receiver on a private or loopback address
/// is refused at registration, and one whose name turns private later
/// (stored past the check, as DNS rebinding would) gets nothing: the
/// push is refused when connecting and retried, the reason shown.
async fn private_receivers_are_refused_at_registration_and_delivery(e: EventsApp) {
    let app = &e.app;
    for url in [
        "https://127.0.0.1/events",
        "https://10.1.2.3/events",
        "https://[::1]/events",
        "https://localhost/events",
        "http://203.0.113.9/events",
        "not a url",
    ] {
        let r = receivers::add(
            &app.state.db,
            &app.state.events.seal_key,
            false,
            NewReceiverRequest {
                endpoint_url: url.into(),
                audience: AUD.into(),
                authorization: None,
            },
            app.now(),
            "test",
            None,
        )
        .await;
        assert!(matches!(r, Err(ReceiverError::Invalid(_))), "{url}: {r:?}");
    }
    assert!(
        store::events::receivers(&app.state.db)
            .await
            .unwrap()
            .is_empty()
    );

    let receiver = Receiver::start(0).await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    store::events::add_receiver(
        &app.state.db,
        store::events::NewReceiver {
            id: "rcv_rebound".into(),
            endpoint_url: format!("https://localhost:{port}/events"),
            audience: AUD.into(),
            authorization_sealed: None,
            created_at: app.now(),
        },
        AuditEvent {
            at: app.now(),
            event: "test.rebound",
            client_id: None,
            subject: None,
            ip: None,
            detail: json!({}),
        },
    )
    .await
    .unwrap();
    let a = agent(app, "alice", "read", &[]).await;
    set_agent_active(app, &a.id, false).await;
    app.state.events.wake();
    wait_until("the refused connection recorded", || async {
        store::events::queued(&app.state.db, "rcv_rebound")
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.attempts > 0)
    })
    .await;
    let rows = store::events::queued(&app.state.db, "rcv_rebound")
        .await
        .unwrap();
    assert_eq!(rows[0].state, "pending");
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("non-public"),
        "{:?}",
        rows[0].last_error
    );
    assert_eq!(receiver.count(), 0);
}
both_with!(
    guarded_app,
    private_receivers_are_refused_at_registration_and_delivery
);

/// The operator pages list, add and remove receivers; bad input gets the
/// reason on the page (400); the authorization value never appears on a
/// page, in the audit log, or in the database in clear; others get 403.
async fn operator_pages_manage_receivers(e: EventsApp) {
    let app = &e.app;
    user(app, "root").await;
    user(app, "bob").await;
    let root = store::users::by_username(&app.state.db, "root")
        .await
        .unwrap()
        .unwrap();
    store::users::set_admin(&app.state.db, &root.id, true)
        .await
        .unwrap();
    let bob = Browser::new(app);
    bob.login("bob", PASSWORD).await;
    assert_eq!(bob.get("/admin/receivers").await.status, 403);
    let bob_csrf = hidden(&bob.get("/account").await, "csrf_token");
    let r = bob
        .post(
            "/admin/receivers",
            &[
                ("csrf_token", &bob_csrf),
                ("endpoint_url", "https://93.184.216.34/e"),
                ("aud", "x"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);

    let op = Browser::new(app);
    op.login("root", PASSWORD).await;
    let page = op.get("/admin/receivers").await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("No receivers."));
    let csrf = hidden(&page, "csrf_token");
    // No CSRF token: refused.
    let r = op
        .post(
            "/admin/receivers",
            &[("endpoint_url", "https://93.184.216.34/e"), ("aud", "x")],
        )
        .await;
    assert_eq!(r.status, 403);
    // Bad input: the page again with the reason, nothing stored.
    for (url, aud, auth, why) in [
        ("ftp://93.184.216.34/e", AUD, "", "must be https"),
        (
            "https://93.184.216.34/e",
            "",
            "",
            "audience (aud) is required",
        ),
        (
            "https://93.184.216.34/e",
            AUD,
            "Bearer \u{1}x",
            "authorization value",
        ),
        ("", AUD, "", "endpoint URL is required"),
    ] {
        let r = op
            .post(
                "/admin/receivers",
                &[
                    ("csrf_token", &csrf),
                    ("endpoint_url", url),
                    ("aud", aud),
                    ("authorization", auth),
                ],
            )
            .await;
        assert_eq!(r.status, 400, "{url} {aud}");
        assert!(String::from_utf8_lossy(&r.body).contains(why), "{why}");
    }
    let secret = "Bearer op-s3cret-never-shown";
    let r = op
        .post(
            "/admin/receivers",
            &[
                ("csrf_token", &csrf),
                ("endpoint_url", &app_receiver_url()),
                ("aud", AUD),
                ("authorization", secret),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let page = op.get("/admin/receivers").await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    let listed = store::events::receivers(&app.state.db).await.unwrap();
    assert_eq!(listed.len(), 1);
    let id = listed[0].row.id.clone();
    assert!(
        html.contains(&id) && html.contains("set (sealed)"),
        "{html}"
    );
    assert!(!html.contains("op-s3cret"));
    let sealed = listed[0].row.authorization_sealed.clone().unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("op-s3cret"));
    for row in store::audit::recent(&app.state.db, 100).await.unwrap() {
        assert!(!row.detail.to_string().contains("op-s3cret"), "{:?}", row);
    }
    let audit = store::audit::recent(&app.state.db, 100).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.event == "security_event.receiver_added"
                && r.subject.as_deref() == Some(root.id.as_str()))
    );

    // Counts on the page: one pending after a kill the receiver did not take.
    let r = op
        .post(
            &format!("/admin/receivers/{id}/delete"),
            &[("csrf_token", "forged")],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = op
        .post(
            &format!("/admin/receivers/{id}/delete"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(
        store::events::receivers(&app.state.db)
            .await
            .unwrap()
            .is_empty()
    );
    let r = op
        .post(
            &format!("/admin/receivers/{id}/delete"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 404);
}
both_with!(events_app, operator_pages_manage_receivers);

fn app_receiver_url() -> String {
    "http://127.0.0.1:9/events".into()
}

/// The page shows what waits, what failed and the last error.
async fn operator_page_shows_queue_counts(e: EventsApp) {
    let app = &e.app;
    user(app, "root").await;
    let root = store::users::by_username(&app.state.db, "root")
        .await
        .unwrap()
        .unwrap();
    store::users::set_admin(&app.state.db, &root.id, true)
        .await
        .unwrap();
    let receiver = Receiver::start(0).await;
    receiver
        .script
        .lock()
        .unwrap()
        .push_back((503, String::new()));
    register(app, &receiver.url, None).await;
    let a = agent(app, "alice", "read", &[]).await;
    set_agent_active(app, &a.id, false).await;
    app.state.events.wake();
    wait_for("the attempt", || receiver.count() == 1).await;
    let op = Browser::new(app);
    op.login("root", PASSWORD).await;
    wait_until("the error on the page", || async {
        let html = String::from_utf8_lossy(&op.get("/admin/receivers").await.body).to_string();
        html.contains("the receiver answered 503") && html.contains("<td>1</td>")
    })
    .await;
}
both_with!(events_app, operator_page_shows_queue_counts);

/// A SET is not an access token: `typ` secevent+jwt is refused by our
/// own verification, by the kit, and by introspection.
async fn a_set_is_not_an_access_token(e: EventsApp) {
    let app = &e.app;
    let receiver = Receiver::start(0).await;
    register(app, &receiver.url, None).await;
    let a = agent(app, "alice", "read", &[]).await;
    set_agent_active(app, &a.id, false).await;
    app.state.events.wake();
    wait_for("a SET", || receiver.count() == 1).await;
    let set = receiver.sets()[0].clone();
    assert!(matches!(
        app.state.tokens.keys.verify_access_token(&set),
        Err(agentauth_resource::VerifyError::Type)
    ));
    let keys = crate::resource::AsKeys(app.state.clone());
    assert!(matches!(
        agentauth_resource::verify_jwt::<Value, _>(
            &set,
            agentauth_resource::ACCESS_TOKEN_TYP,
            |kid| { agentauth_resource::KeySource::key(&keys, kid) }
        ),
        Err(agentauth_resource::VerifyError::Type)
    ));
    let verifier = agentauth_resource::ResourceVerifier::new(
        ISSUER,
        "https://mcp.example.com/mcp",
        crate::resource::AsKeys(app.state.clone()),
    );
    let mut headers = HeaderMap::new();
    headers.insert("authorization", format!("Bearer {set}").parse().unwrap());
    assert!(
        verifier
            .verify("GET", "https://mcp.example.com/mcp", &headers, app.now())
            .is_err()
    );
    assert_eq!(app.introspect(&set).await, json!({ "active": false }));
}
both_with!(events_app, a_set_is_not_an_access_token);

/// SSF 1.0 §7: the transmitter configuration, with only what is served.
async fn transmitter_configuration_is_published(e: EventsApp) {
    let r = e.app.get("/.well-known/ssf-configuration").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(
        doc,
        json!({
            "spec_version": "1_0",
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}/jwks.json"),
            "delivery_methods_supported": ["urn:ietf:rfc:8935"],
        })
    );
}
both_with!(events_app, transmitter_configuration_is_published);

/// The queue per receiver is bounded: beyond the bound the oldest are
/// dropped, counted and audited.
async fn the_queue_is_bounded(e: EventsApp) {
    use sea_orm::{ConnectionTrait, Statement};
    let app = &e.app;
    // A receiver nobody listens to, backing off far into the future.
    let id = register(app, "http://127.0.0.1:9/events", None).await;
    let db = &app.state.db;
    let backend = db.get_database_backend();
    db.execute(Statement::from_string(
        backend,
        format!("UPDATE event_receivers SET retry_at_ms = 9000000000000 WHERE id = '{id}'"),
    ))
    .await
    .unwrap();
    // Fill it to the bound with rows as the hook writes them.
    let bound = store::events::MAX_QUEUED_PER_RECEIVER as i64;
    db.execute(Statement::from_string(
        backend,
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {bound}) \
             INSERT INTO security_events (receiver_id, jti, txn, event_type, sub_id, event, created_at, state, attempts, next_attempt_ms, leased_until_ms) \
             SELECT '{id}', 'fill-' || i, 't', 'x', '{{}}', '{{}}', {now}, 'pending', 0, 0, 0 FROM n",
            // Written now: rows from 1970 would be past the maximum age,
            // and the worker's sweep would mark them failed meanwhile.
            now = app.now(),
        ),
    ))
    .await
    .unwrap();
    let a = agent(app, "alice", "read", &[]).await;
    set_agent_active(app, &a.id, false).await;
    let listed = store::events::receivers(db).await.unwrap();
    assert_eq!(listed[0].pending, bound);
    assert_eq!(listed[0].row.dropped, 1);
    let rows = store::events::queued(db, &id).await.unwrap();
    assert_eq!(rows[0].jti, "fill-2", "the oldest went");
    assert_eq!(
        rows.last().unwrap().event_type,
        SESSION_REVOKED,
        "the newest stays"
    );
    let audit = store::audit::recent(db, 10).await.unwrap();
    assert!(audit.iter().any(|r| r.event == "security_event.dropped"));
}
both_with!(events_app, the_queue_is_bounded);

/// The database of a real-binary test: a SQLite file or a scratch
/// PostgreSQL database.
enum ProcessDb {
    Sqlite(tempfile::TempDir),
    Postgres(crate::processes::ScratchDb),
}

impl ProcessDb {
    async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => ProcessDb::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => ProcessDb::Postgres(crate::processes::ScratchDb::new().await),
        }
    }

    fn url(&self) -> String {
        match self {
            ProcessDb::Sqlite(dir) => format!("sqlite://{}", dir.path().join("a.db").display()),
            ProcessDb::Postgres(db) => db.url(),
        }
    }
}

const KEK: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";

/// `agentauth …` against `db`: whether it succeeded, stdout, stderr.
async fn agentauth(args: &[&str], db: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentauth"))
        .args(args)
        .env("DATABASE_URL", db)
        .env("AGENTAUTH_KEK", KEK)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn agentauth_ok(args: &[&str], db: &str, env: &[(&str, &str)]) -> String {
    let (ok, out, err) = agentauth(args, db, env).await;
    assert!(ok, "agentauth {args:?}: {err}");
    out
}

/// The server binary with the test switch on, its log (debug level) in
/// `log`.
fn serve_logged(port: u16, db: &str, log: &std::path::Path) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_agentauth"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--issuer", &format!("http://127.0.0.1:{port}")])
        .args(["--resource", "https://mcp.example.com/mcp"])
        .arg("--insecure-fetch-for-tests-only")
        .env("DATABASE_URL", db)
        .env("AGENTAUTH_KEK", KEK)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Issue 31's "done when": SETs are queued while the receiver is down,
/// the server is killed with SIGKILL mid-retry and started again, the
/// receiver comes up: every event arrives, none twice. The receiver's
/// authorization value is in no log line.
async fn kill_9_loses_no_event_and_sends_none_twice(backend: Backend) {
    const AGENTS: usize = 4;
    let db = ProcessDb::new(backend).await;
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let http = reqwest::Client::new();
    let port = crate::processes::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve_logged(port, &url, &log);
    crate::processes::wait_up(&http, &base).await;

    agentauth_ok(
        &["user", "create", "alice"],
        &url,
        &[("AGENTAUTH_PASSWORD", PASSWORD)],
    )
    .await;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let key = dir.path().join(format!("k{i}.json"));
        let jwk = crate::private_key_jwt::client_key(&format!("k{i}")).jwk;
        std::fs::write(&key, jwk.to_string()).unwrap();
        let id = agentauth_ok(
            &[
                "agent",
                "create",
                "--owner",
                "alice",
                "--name",
                &format!("a{i}"),
                "--jwk",
                key.to_str().unwrap(),
            ],
            &url,
            &[],
        )
        .await;
        agents.push(id);
    }
    let receiver_port = crate::processes::free_port();
    let secret = "Bearer kill9-s3cret-value";
    let rid = agentauth_ok(
        &[
            "receiver",
            "add",
            "--endpoint",
            &format!("http://127.0.0.1:{receiver_port}/events"),
            "--aud",
            AUD,
            "--insecure-fetch-for-tests-only",
        ],
        &url,
        &[("AGENTAUTH_RECEIVER_AUTHORIZATION", secret)],
    )
    .await;
    for id in &agents {
        agentauth_ok(&["agent", "disable", id], &url, &[]).await;
    }
    // The server tried (the receiver is down), then dies without warning.
    let check = store::connect(&url, 1, None).await.unwrap();
    wait_until("an attempt", || async {
        store::events::queued(&check, &rid)
            .await
            .unwrap()
            .iter()
            .any(|r| r.attempts > 0)
    })
    .await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let receiver = Receiver::start(receiver_port).await;
    let mut server = serve_logged(port, &url, &log);
    crate::processes::wait_up(&http, &base).await;
    // The backoff after a few seconds down is a few seconds at most.
    let start = Instant::now();
    while receiver.count() < AGENTS {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "got {}",
            receiver.count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sets = receiver.sets();
    assert_eq!(sets.len(), AGENTS, "no SET twice");
    assert_eq!(futures_jtis(&sets).len(), AGENTS);
    let mut subjects: Vec<String> = sets
        .iter()
        .map(|s| {
            crate::helpers::jwt_parts(s).1["sub_id"]["sub"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    subjects.sort();
    agents.sort();
    assert_eq!(subjects, agents);
    for p in receiver.pushes.lock().unwrap().iter() {
        assert_eq!(p.authorization.as_deref(), Some(secret));
    }
    wait_until("the outbox empty", || async {
        store::events::queued(&check, &rid)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEBUG"), "the log is at debug level");
    assert!(
        !logged.contains("kill9-s3cret"),
        "the authorization value was logged"
    );
}

mod kill_9_loses_no_event_and_sends_none_twice {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::kill_9_loses_no_event_and_sends_none_twice(crate::helpers::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::kill_9_loses_no_event_and_sends_none_twice(crate::helpers::Backend::Postgres).await
    }
}

/// `agentauth receiver add|list|remove`: clear refusals, the
/// authorization value never printed.
async fn cli_manages_receivers(backend: Backend) {
    let db = ProcessDb::new(backend).await;
    let url = db.url();
    for (endpoint, why) in [
        ("https://10.0.0.1/events", "non-public"),
        ("http://127.0.0.1:9/events", "must be https"),
        ("https://user:pw@93.184.216.34/e", "user name or password"),
        ("nonsense", "endpoint URL"),
    ] {
        let (ok, _, err) = agentauth(
            &["receiver", "add", "--endpoint", endpoint, "--aud", AUD],
            &url,
            &[],
        )
        .await;
        assert!(!ok && err.contains(why), "{endpoint}: {err}");
    }
    let (ok, _, err) = agentauth(
        &[
            "receiver",
            "add",
            "--endpoint",
            "https://93.184.216.34/e",
            "--aud",
            " ",
        ],
        &url,
        &[],
    )
    .await;
    assert!(!ok && err.contains("aud"), "{err}");
    let id = agentauth_ok(
        &[
            "receiver",
            "add",
            "--endpoint",
            "https://93.184.216.34/events",
            "--aud",
            AUD,
        ],
        &url,
        &[("AGENTAUTH_RECEIVER_AUTHORIZATION", "Bearer cli-s3cret")],
    )
    .await;
    assert!(id.starts_with("rcv_"), "{id}");
    let plain = agentauth_ok(
        &[
            "receiver",
            "add",
            "--endpoint",
            "https://93.184.216.34/other",
            "--aud",
            "x",
        ],
        &url,
        &[],
    )
    .await;
    let list = agentauth_ok(&["receiver", "list"], &url, &[]).await;
    assert!(
        list.contains(&id) && list.contains(&plain) && list.contains("sealed"),
        "{list}"
    );
    assert!(!list.contains("cli-s3cret"));
    let json_list = agentauth_ok(&["receiver", "list", "--json"], &url, &[]).await;
    let rows: Vec<Value> = json_list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    let row = rows.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(row["authorization"], true);
    assert_eq!(row["pending"], 0);
    assert_eq!(row["aud"], AUD);
    assert!(!json_list.contains("cli-s3cret"));
    assert_eq!(
        agentauth_ok(&["receiver", "remove", &id], &url, &[]).await,
        format!("removed {id}")
    );
    let (ok, _, err) = agentauth(&["receiver", "remove", &id], &url, &[]).await;
    assert!(!ok && err.contains("no receiver"), "{err}");
    let list = agentauth_ok(&["receiver", "list", "--json"], &url, &[]).await;
    assert_eq!(list.lines().count(), 1);
}

mod cli_manages_receivers {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::cli_manages_receivers(crate::helpers::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::cli_manages_receivers(crate::helpers::Backend::Postgres).await
    }
}
