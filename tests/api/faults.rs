//! Issue 18, item 2: a real server process loses its database under
//! mixed load. Endpoints that need the database answer 503 with
//! `Retry-After` within the pool's acquire timeout (5 s); metadata and
//! JWKS keep answering from memory; `/readyz` turns 503 while `/healthz`
//! stays 200; no request is answered 500 or left hanging; when the
//! database comes back the same process recovers with no restart, and
//! every registration it acknowledged is there.
//!
//! PostgreSQL is "stopped" by cutting a TCP proxy between the node and
//! the machine's server: stopping the real server would take the database
//! away from every other test running beside this one. From the node's
//! side it is the same event (every connection closed, new connections
//! refused). The full disk is a real one: a 1 MiB tmpfs under the SQLite
//! file, which needs root (CI runs as root; elsewhere `sudo -n`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::processes::{
    MANY_REGISTRATIONS, ScratchDb, cli_client, cli_env, free_port, random_kek, serve, wait_up,
};

/// The keys of `keys` that have no row in entity `E`.
pub(crate) async fn not_stored<E, K>(db: &sea_orm::DatabaseConnection, keys: &[K]) -> Vec<K>
where
    E: sea_orm::EntityTrait,
    K: Clone + Into<<E::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType>,
{
    let mut missing = Vec::new();
    for key in keys {
        if E::find_by_id(key.clone()).one(db).await.unwrap().is_none() {
            missing.push(key.clone());
        }
    }
    missing
}

/// What a node serves with its database away: JWKS, metadata, liveness.
async fn assert_served_from_memory(http: &reqwest::Client, base: &str, when: &str) {
    for path in [
        "/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/healthz",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} {when}");
    }
}

/// A TCP proxy to PostgreSQL that can be cut (listener closed, every
/// open connection dropped) and restored on the same port.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let mut proxy = Self {
            port: free_port(),
            upstream,
            task: None,
        };
        proxy.restore().await;
        proxy
    }

    /// Starts forwarding again, on the same port.
    async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let upstream = self.upstream;
        self.task = Some(tokio::spawn(async move {
            // Owned by this task: aborting it drops every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    /// The database is gone: no listener, every connection closed.
    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// What the load saw: (phase, endpoint, status, milliseconds).
type Seen = Arc<Mutex<Vec<(&'static str, &'static str, u16, u128)>>>;

/// Registrations, client_credentials tokens and JWKS reads in a loop
/// until `stop`; acknowledged registrations go to `acked`.
fn mixed_load(
    base: String,
    client: (String, String),
    phase: Arc<Mutex<&'static str>>,
    seen: Seen,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut n = 0u32;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let started = Instant::now();
            let (endpoint, response) = match n % 3 {
                0 => (
                    "register",
                    http.post(format!("{base}/register"))
                        .json(&json!({"grant_types": ["client_credentials"],
                                      "client_name": format!("load {n}")}))
                        .send()
                        .await,
                ),
                1 => (
                    "token",
                    http.post(format!("{base}/token"))
                        .basic_auth(&client.0, Some(&client.1))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body("grant_type=client_credentials")
                        .send()
                        .await,
                ),
                _ => ("jwks", http.get(format!("{base}/jwks.json")).send().await),
            };
            let phase = *phase.lock().unwrap();
            let response = response.unwrap_or_else(|e| panic!("{endpoint} in {phase}: {e}"));
            let status = response.status().as_u16();
            if status == 503 {
                assert!(
                    response.headers().contains_key("retry-after"),
                    "{endpoint}: 503 without Retry-After"
                );
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if endpoint == "register" && status == 201 {
                acked
                    .lock()
                    .unwrap()
                    .push(body["client_id"].as_str().unwrap().to_string());
            }
            seen.lock()
                .unwrap()
                .push((phase, endpoint, status, started.elapsed().as_millis()));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_under_load_answers_503_and_recovers_without_restart() {
    let db = ScratchDb::new().await;
    let mut proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let kek = random_kek();
    let _server = serve(port, &base, &url, &kek, MANY_REGISTRATIONS);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    wait_up(&http, &base).await;
    let client = cli_client(&url, &cli_env(&kek), &["--name", "worker"]).await;

    let phase = Arc::new(Mutex::new("before"));
    let seen: Seen = Arc::default();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            mixed_load(
                base.clone(),
                client.clone(),
                phase.clone(),
                seen.clone(),
                acked.clone(),
                stop.clone(),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The database goes away.
    *phase.lock().unwrap() = "outage";
    proxy.cut().await;
    let started = Instant::now();
    let r = http
        .post(format!("{base}/register"))
        .json(&json!({"client_name": "during the outage", "grant_types": ["client_credentials"]}))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(
        waited < Duration::from_secs(8),
        "503 took {waited:?}, beyond the 5 s acquire timeout"
    );
    assert_served_from_memory(&http, &base, "during the outage").await;
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_secs(6)).await;

    // It comes back; the same process recovers.
    proxy.restore().await;
    *phase.lock().unwrap() = "recovering";
    let back = Instant::now();
    loop {
        let r = http.get(format!("{base}/readyz")).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "not ready 15 s after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    *phase.lock().unwrap() = "after";
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let seen = seen.lock().unwrap().clone();
    let count = |phase: &str, endpoint: &str, status: u16| {
        seen.iter()
            .filter(|s| s.0 == phase && s.1 == endpoint && s.2 == status)
            .count()
    };
    // Nothing but the expected answers, ever.
    for (phase, endpoint, status, ms) in &seen {
        let expected = match *endpoint {
            "register" => [201, 503].contains(status),
            "token" => [200, 503].contains(status),
            _ => *status == 200,
        };
        assert!(expected, "{endpoint} answered {status} in {phase}");
        assert!(*ms < 8_000, "{endpoint} took {ms} ms in {phase}");
    }
    assert!(count("before", "register", 201) > 0, "{seen:?}");
    assert!(count("outage", "register", 503) > 0, "{seen:?}");
    assert!(count("outage", "jwks", 200) > 0, "{seen:?}");
    assert!(count("after", "register", 201) > 0, "{seen:?}");
    assert!(count("after", "token", 200) > 0, "{seen:?}");

    // Every acknowledged registration is there, whole: it can get a token.
    let acked = acked.lock().unwrap().clone();
    let admin = sea_orm::Database::connect(db.url()).await.unwrap();
    use sea_orm::{EntityTrait, PaginatorTrait};
    let rows = entity::client::Entity::find().count(&admin).await.unwrap() as usize;
    assert!(
        rows > acked.len(),
        "{rows} rows, {} acknowledged",
        acked.len()
    );
    let lost = not_stored::<entity::client::Entity, _>(&admin, &acked).await;
    assert!(lost.is_empty(), "acknowledged registrations lost: {lost:?}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("agentauth_handler_panics_total 0"),
        "{metrics}"
    );
}

/// Mounts a tmpfs of `size` at `dir` (root, or `sudo -n`).
fn mount_tmpfs(dir: &std::path::Path, size: &str) {
    let as_root = is_root();
    let mut command = if as_root {
        std::process::Command::new("mount")
    } else {
        let mut c = std::process::Command::new("sudo");
        c.args(["-n", "mount"]);
        c
    };
    let out = command
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the full-disk test mounts a small tmpfs and needs root or password-less sudo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let mut command = if is_root() {
            std::process::Command::new("umount")
        } else {
            let mut c = std::process::Command::new("sudo");
            c.args(["-n", "umount"]);
            c
        };
        let _ = command.arg("-l").arg(&self.0).output();
    }
}

/// The disk under the SQLite file fills up: writes answer 503 with
/// Retry-After (never 500), reads, metadata and JWKS keep answering, the
/// database stays intact, and once space is freed the same process
/// writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_answers_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    mount_tmpfs(dir.path(), "4m");
    let _unmount = Unmount(dir.path().to_path_buf());
    let file = dir.path().join("agentauth.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let kek = random_kek();
    let _server = serve(port, &base, &url, &kek, MANY_REGISTRATIONS);
    let http = reqwest::Client::new();
    wait_up(&http, &base).await;

    // Fill what is left of the disk with a ballast file.
    let ballast = dir.path().join("ballast");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    let register = json!({"grant_types": ["client_credentials"], "client_name": "x".repeat(200),
                          "client_uri": "https://example.com/"});
    let mut acked = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let r = http
            .post(format!("{base}/register"))
            .json(&register)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => acked.push(
                r.json::<Value>().await.unwrap()["client_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"], "temporarily_unavailable", "{body}");
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!(
                "register on a full disk answered {other}: {}",
                r.text().await.unwrap()
            ),
        }
    }
    assert_eq!(
        refused,
        5,
        "the disk never filled ({} acknowledged)",
        acked.len()
    );
    assert_served_from_memory(&http, &base, "on a full disk").await;

    // Space comes back; the same process writes again.
    std::fs::remove_file(&ballast).unwrap();
    let r = http
        .post(format!("{base}/register"))
        .json(&register)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "no recovery after space was freed");
    acked.push(
        r.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_string(),
    );

    // Intact, and nothing acknowledged was lost.
    let db = sea_orm::Database::connect(&url).await.unwrap();
    use sea_orm::ConnectionTrait;
    let check = db
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "PRAGMA integrity_check",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(check.try_get_by_index::<String>(0).unwrap(), "ok");
    let lost = not_stored::<entity::client::Entity, _>(&db, &acked).await;
    let at: Vec<usize> = lost
        .iter()
        .filter_map(|id| acked.iter().position(|a| a == id))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged registrations lost: {lost:?}, at {at:?} of {}",
        acked.len()
    );
}
