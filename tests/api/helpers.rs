#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use agentauth::clock::{Clock, ManualClock};
use agentauth::config::ServeArgs;
use agentauth::crypto::{Kek, random_bytes};
use agentauth::router;
use agentauth::state::{AppState, Setup, State};
use agentauth::store;
use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use http_body_util::BodyExt;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use tower::ServiceExt;

pub const ISSUER: &str = "https://auth.example.com";
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test case on both backends: `both!(case_fn)` makes
/// `case_fn::sqlite` and `case_fn::postgres`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await)
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await)
                    .await
            }
        }
    };
}

/// Like [`both!`], with the app made by `$setup(backend)`:
/// `both_with!(registry_app, case_fn)`.
#[macro_export]
macro_rules! both_with {
    ($setup:ident, $name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::$setup($crate::helpers::Backend::Sqlite).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::$setup($crate::helpers::Backend::Postgres).await).await
            }
        }
    };
}

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub backend: Backend,
    pub kek_bytes: [u8; 32],
    /// A client allowed to introspect every token, made on first use.
    pub introspector: tokio::sync::OnceCell<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 6749 §5.2 error: status, `error` code, no-store.
    pub fn assert_error(&self, status: u16, error: &str) -> Value {
        let body = self.json();
        assert_eq!(self.status.as_u16(), status, "status; body {body}");
        assert_eq!(body["error"], error, "error code; body {body}");
        assert_eq!(self.header("cache-control"), Some("no-store"));
        body
    }
}

/// The resources tests name, registered as `--resource` flags (any scope).
pub const RESOURCES: &[&str] = &[
    "https://mcp.example.com/mcp",
    "https://mcp.example.com/",
    "https://other.example.com/",
    "https://a.example.com/",
    "https://b.example.com/",
];

pub fn serve_args() -> ServeArgs {
    ServeArgs {
        issuer: ISSUER.into(),
        resources: RESOURCES.iter().map(|r| r.to_string()).collect(),
        ..ServeArgs::default()
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, serve_args()).await
}

pub async fn spawn_app_with(backend: Backend, args: ServeArgs) -> TestApp {
    let (db, dir) = fresh_db(backend).await;
    spawn_app_on(backend, db, dir, args).await
}

/// A node on a database prepared beforehand (rows the configuration must
/// name, say).
/// A node whose resource registry is the resources file `toml` (read at
/// start), with `configure` applied to its arguments.
pub async fn spawn_app_with_resources(
    backend: Backend,
    toml: &str,
    configure: impl FnOnce(&mut ServeArgs),
) -> TestApp {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    let mut args = serve_args();
    args.resources = Vec::new();
    args.resources_file = Some(file.path().to_path_buf());
    configure(&mut args);
    spawn_app_with(backend, args).await
}

pub async fn spawn_app_on(
    backend: Backend,
    db: sea_orm::DatabaseConnection,
    dir: Option<tempfile::TempDir>,
    args: ServeArgs,
) -> TestApp {
    spawn_app_keyed(backend, db, dir, args, random_bytes::<32>().unwrap()).await
}

/// A node under a given KEK: another node of an existing database.
pub async fn spawn_app_keyed(
    backend: Backend,
    db: sea_orm::DatabaseConnection,
    dir: Option<tempfile::TempDir>,
    args: ServeArgs,
    kek_bytes: [u8; 32],
) -> TestApp {
    let config = Setup::from_args(&args).unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let kek = Kek::from_bytes(&kek_bytes).unwrap();
    let (state, _audit) = State::new(config, db, kek, clock.clone()).await.unwrap();
    // Login-request announcements from other nodes (PostgreSQL).
    let _ = agentauth::agents::login::spawn_listener(state.agents.clone());
    let router = router::build(state.clone())
        .layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 10], 40000))));
    TestApp {
        router,
        state,
        clock,
        backend,
        kek_bytes,
        introspector: Default::default(),
        _dir: dir,
    }
}

/// Two server nodes (separate pools, states and caches) on one fresh
/// PostgreSQL schema, sharing a KEK as real nodes must.
pub async fn spawn_pg_nodes() -> (TestApp, TestApp) {
    spawn_pg_nodes_with(|_| {}).await
}

pub async fn spawn_pg_nodes_with(configure: impl Fn(&mut ServeArgs)) -> (TestApp, TestApp) {
    let schema = fresh_schema().await;
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let kek_bytes = random_bytes::<32>().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let db = store::connect(PG_URL, 4, Some(&schema)).await.unwrap();
        let mut args = serve_args();
        configure(&mut args);
        let config = Setup::from_args(&args).unwrap();
        let (state, _audit) = State::new(
            config,
            db,
            Kek::from_bytes(&kek_bytes).unwrap(),
            clock.clone(),
        )
        .await
        .unwrap();
        let _ = agentauth::agents::login::spawn_listener(state.agents.clone());
        let router = router::build(state.clone())
            .layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 10], 40000))));
        nodes.push(TestApp {
            router,
            state,
            clock: clock.clone(),
            backend: Backend::Postgres,
            kek_bytes,
            introspector: Default::default(),
            _dir: None,
        });
    }
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    (a, b)
}

/// A fresh database: a new SQLite file, or a new PostgreSQL schema.
pub async fn fresh_db(
    backend: Backend,
) -> (sea_orm::DatabaseConnection, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("agentauth.db").display()
            );
            (store::connect(&url, 4, None).await.unwrap(), Some(dir))
        }
        Backend::Postgres => {
            let schema = fresh_schema().await;
            (
                store::connect(PG_URL, 4, Some(&schema))
                    .await
                    .expect("PostgreSQL at 127.0.0.1:5432 (user postgres, database test)"),
                None,
            )
        }
    }
}

/// Creates a uniquely named schema, and drops ones older runs left behind
/// (their names carry the creation time).
pub async fn fresh_schema() -> String {
    let admin = Database::connect(PG_URL)
        .await
        .expect("PostgreSQL must be reachable at 127.0.0.1:5432 (user postgres, database test)");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stale = admin
        .query_all(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'aa_test_%'".to_string(),
        ))
        .await
        .unwrap();
    for row in stale {
        let name: String = row.try_get("", "nspname").unwrap();
        let created: u64 = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if created + 3600 < now {
            let _ = admin
                .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .await;
        }
    }
    let schema = format!("aa_test_{now}_{}", hex(&random_bytes::<6>().unwrap()));
    admin
        .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .unwrap();
    schema
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl TestApp {
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// POSTs a form, with Basic credentials when `auth` is given.
    pub async fn post_form(
        &self,
        path: &str,
        pairs: &[(&str, &str)],
        auth: Option<(&str, &str)>,
    ) -> TestResponse {
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = auth {
            req = req.header(header::AUTHORIZATION, basic(id, secret));
        }
        self.send(req.body(Body::from(form(pairs))).unwrap()).await
    }

    /// POSTs a form with a `DPoP` proof header.
    pub async fn post_form_with_dpop(
        &self,
        path: &str,
        pairs: &[(&str, &str)],
        proof: &str,
    ) -> TestResponse {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("DPoP", proof);
        self.send(req.body(Body::from(form(pairs))).unwrap()).await
    }

    pub async fn json_request(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        bearer: Option<&str>,
    ) -> TestResponse {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(req.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// An initial access token good for one registration.
    pub async fn initial_token(&self) -> String {
        let token = agentauth::crypto::random_token().unwrap();
        store::initial_tokens::insert(
            &self.state.db,
            agentauth::crypto::sha256(token.as_bytes()),
            self.state.now(),
            None,
            Some(1),
            None,
        )
        .await
        .unwrap();
        token
    }

    /// Registers a client with an initial access token (kind
    /// `initial_token`, which may use client_credentials by default).
    pub async fn register(&self, metadata: Value) -> Value {
        let token = self.initial_token().await;
        let r = self
            .json_request("POST", "/register", &metadata, Some(&token))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// Registers a client anonymously (open DCR: kind `dynamic`).
    pub async fn register_open(&self, metadata: Value) -> Value {
        let r = self
            .json_request("POST", "/register", &metadata, None)
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// Registers a client_secret_basic client_credentials client.
    pub async fn cc_client(&self, scope: &str) -> (String, String) {
        let reg = self
            .register(serde_json::json!({
                "client_name": "worker",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_basic",
                "scope": scope,
            }))
            .await;
        (
            reg["client_id"].as_str().unwrap().into(),
            reg["client_secret"].as_str().unwrap().into(),
        )
    }

    pub async fn token(&self, id: &str, secret: &str, extra: &[(&str, &str)]) -> TestResponse {
        let mut pairs = vec![("grant_type", "client_credentials")];
        pairs.extend_from_slice(extra);
        self.post_form("/token", &pairs, Some((id, secret))).await
    }

    /// A client_credentials access token for a fresh client.
    pub async fn access_token(&self, scope: &str) -> (String, String, String) {
        let (id, secret) = self.cc_client(scope).await;
        let r = self.token(&id, &secret, &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        (
            id,
            secret,
            r.json()["access_token"].as_str().unwrap().to_string(),
        )
    }

    /// A client the operator made an introspector for every token
    /// (`agentauth client create --introspect '*'`).
    pub async fn introspector(&self) -> &(String, String) {
        self.introspector
            .get_or_init(|| async {
                let client = self.cc_client("").await;
                self.set_introspects(&client.0, &["*"]).await;
                client
            })
            .await
    }

    /// Sets the resources whose tokens a client may introspect, as
    /// `agentauth client create --introspect` does.
    pub async fn set_introspects(&self, client_id: &str, resources: &[&str]) {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        entity::client::Entity::update_many()
            .col_expr(
                entity::client::Column::Introspects,
                Expr::value(serde_json::json!(resources)),
            )
            .filter(entity::client::Column::ClientId.eq(client_id))
            .exec(&self.state.db)
            .await
            .unwrap();
        self.state.clients.forget(client_id).await;
    }

    /// Introspects as the all-seeing introspector.
    pub async fn introspect(&self, token: &str) -> Value {
        let (id, secret) = self.introspector().await.clone();
        self.introspect_as(&id, &secret, token).await
    }

    pub async fn introspect_as(&self, id: &str, secret: &str, token: &str) -> Value {
        let r = self
            .post_form("/introspect", &[("token", token)], Some((id, secret)))
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    /// The audit events written so far, once every one of `expected` is
    /// among them (issuance events are written in batches, off the request
    /// path): polls until they are, and fails after 10 s; no fixed sleep.
    pub async fn audit_events_with(&self, expected: &[&str]) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let events: Vec<String> = store::audit::recent(&self.state.db, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .collect();
            if expected.iter().all(|e| events.iter().any(|x| x == e)) {
                return events;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "audit events {expected:?} never written; have {events:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// Decodes a JWT's header and claims without verifying (tests only).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let dec = |p: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap(),
        )
        .unwrap()
    };
    let header = dec(parts.next().unwrap());
    let claims = dec(parts.next().unwrap());
    (header, claims)
}

/// Runs `n` copies of `attempt` concurrently; returns their statuses.
pub async fn race<F, Fut>(n: usize, attempt: F) -> Vec<u16>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(attempt())).collect();
    let mut statuses = Vec::with_capacity(n);
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}
