//! The subcommands: serve, migrate, client, keys, ca, user, agent, receiver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use crate::clients::register::{NewClient, Registered, Requester, register};
use crate::clock::{Clock, SystemClock};
use crate::config::UserCommand;
use crate::config::{
    CaCommand, ClientCommand, ClientCreateArgs, Command, KeysCommand, ServeArgs, StorageArgs,
};
use crate::crypto::{Kek, random_bytes, random_token, sha256};
use crate::keys;
use crate::oauth::client_kind::ClientKind;
use crate::oauth::client_metadata::{ClientMetadata, ClientMetadataRequest, RegistrationPolicy};
use crate::oauth::resource::ResourceUri;
use crate::router;
use crate::state::{self, State};
use crate::store::{self, audit::AuditEvent, clients::ClientRecord};

pub async fn run(command: Option<Command>, storage: StorageArgs) -> anyhow::Result<()> {
    match command.unwrap_or_else(|| Command::Serve(ServeArgs::default_from_env())) {
        Command::Serve(args) => serve(args, storage).await,
        Command::Resources(args) => print_resources(&args),
        Command::Migrate => {
            store::connect(&database_url(&storage.database_url), 1, None).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Client(cmd) => client(cmd, storage).await,
        Command::Keys(cmd) => keys_command(cmd, storage).await,
        Command::Ca(cmd) => ca_command(cmd, storage).await,
        Command::User(cmd) => user_command(cmd, storage).await,
        Command::Agent(cmd) => agent_command(cmd, storage).await,
        Command::Receiver(cmd) => receiver_command(cmd, storage).await,
    }
}

async fn receiver_command(
    cmd: crate::config::ReceiverCommand,
    storage: StorageArgs,
) -> anyhow::Result<()> {
    use crate::config::ReceiverCommand;
    use crate::events::receivers::{self, NewReceiverRequest, ReceiverError};
    let db = store::connect(&database_url(&storage.database_url), 2, None).await?;
    let now = SystemClock.now();
    match cmd {
        ReceiverCommand::Add {
            endpoint,
            aud,
            authorization,
            insecure_fetch,
        } => {
            if insecure_fetch && !cfg!(debug_assertions) {
                bail!("{}", crate::config::ConfigError::InsecureFetchInRelease);
            }
            let seal_key = receivers::seal_key(&load_kek(&storage)?)?;
            let request = NewReceiverRequest {
                endpoint_url: endpoint,
                audience: aud,
                authorization,
            };
            match receivers::add(&db, &seal_key, insecure_fetch, request, now, "cli", None).await {
                Ok(id) => println!("{id}"),
                Err(ReceiverError::Invalid(why)) => bail!("{why}"),
                Err(e) => return Err(e.into()),
            }
        }
        ReceiverCommand::List { json } => {
            let rows = store::events::receivers(&db).await?;
            if !json {
                println!(
                    "id\tendpoint\taud\tauthorization\tpending\tfailed\tdropped\tdelivered\tlast_error"
                );
            }
            for r in rows {
                let authorization = r.row.authorization_sealed.is_some();
                if json {
                    println!(
                        "{}",
                        json!({
                            "id": r.row.id, "endpoint_url": r.row.endpoint_url, "aud": r.row.audience,
                            "authorization": authorization, "pending": r.pending, "failed": r.failed,
                            "dropped": r.row.dropped, "delivered": r.row.delivered,
                            "last_error": r.row.last_error, "last_error_at": r.row.last_error_at,
                            "last_delivered_at": r.row.last_delivered_at,
                        })
                    );
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        r.row.id,
                        r.row.endpoint_url,
                        r.row.audience,
                        if authorization { "sealed" } else { "-" },
                        r.pending,
                        r.failed,
                        r.row.dropped,
                        r.row.delivered,
                        r.row.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        ReceiverCommand::Remove { id } => {
            if !receivers::remove(&db, &id, now, "cli", None).await? {
                bail!("no receiver {id}");
            }
            println!("removed {id}");
        }
    }
    Ok(())
}

/// `agentauth resources`: the registry `serve` would build, as JSON.
fn print_resources(args: &ServeArgs) -> anyhow::Result<()> {
    let setup = state::Setup::from_args(args)?;
    let registry = &setup.resources;
    let entry = |r: &crate::resources::Resource| {
        json!({
            "uri": r.uri,
            "name": r.name,
            "scopes": r.scopes.as_ref().map(|s| s.iter().collect::<Vec<_>>()),
            "client_credentials": r.client_credentials,
            "dpop": r.dpop,
            "accept_passports": r.accept_passports,
        })
    };
    let out = json!({
        "open_resources": registry.is_open(),
        "default_audience": entry(registry.default_audience()),
        "resources": registry.iter().map(entry).collect::<Vec<_>>(),
        "scopes_supported": registry.scopes_supported().as_ref().map(|s| s.iter().collect::<Vec<_>>()),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

impl ServeArgs {
    /// `agentauth` with no subcommand: serve, still honouring AGENTAUTH_* variables.
    fn default_from_env() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Only::try_parse_from(["agentauth"])
            .map(|o| o.serve)
            .unwrap_or_default()
    }
}

/// SQLite URLs get `mode=rwc` so that the file is created when missing.
pub fn database_url(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_string()
    }
}

/// The SQLite database file a URL names, if any.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

/// The key-encryption key: from AGENTAUTH_KEK, from --kek-file, or from a
/// 0600 file beside the SQLite database (created on first start).
pub fn load_kek(storage: &StorageArgs) -> anyhow::Result<Kek> {
    if let Some(text) = &storage.kek {
        return Kek::from_base64(text).context("AGENTAUTH_KEK");
    }
    let path = match (&storage.kek_file, sqlite_path(&storage.database_url)) {
        (Some(path), _) => path.clone(),
        (None, Some(db)) => {
            let mut name = db
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| "agentauth.db".into());
            name.push(".kek");
            db.with_file_name(name)
        }
        (None, None) => {
            if storage.database_url.contains(":memory:") {
                return Ok(Kek::from_bytes(&random_bytes::<32>()?)?);
            }
            bail!(
                "set AGENTAUTH_KEK (32 bytes, base64) or --kek-file: every node sharing this database needs the same key-encryption key"
            )
        }
    };
    read_or_create_kek(&path)
}

fn read_or_create_kek(path: &Path) -> anyhow::Result<Kek> {
    use base64::Engine as _;
    match std::fs::read_to_string(path) {
        Ok(text) => Kek::from_base64(&text).with_context(|| format!("key file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes::<32>()?;
            let text = base64::engine::general_purpose::STANDARD.encode(key);
            write_private(path, text.as_bytes())
                .with_context(|| format!("creating key file {}", path.display()))?;
            tracing::info!(path = %path.display(), "created the key-encryption key file");
            Ok(Kek::from_bytes(&key)?)
        }
        Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

async fn serve(args: ServeArgs, storage: StorageArgs) -> anyhow::Result<()> {
    let setup = state::Setup::from_args(&args)?;
    let kek = load_kek(&storage)?;
    let db = store::connect(
        &database_url(&storage.database_url),
        storage.db_max_connections,
        None,
    )
    .await
    .context("connecting to the database")?;
    let listen = setup.config.listen;
    let (state, audit_task) = State::new(setup, db, kek, Arc::new(SystemClock)).await?;
    let upkeep = state::spawn_upkeep(state.clone());
    let revocation_refresh = state::spawn_revocation_refresh(state.clone());
    let login_listener = crate::agents::login::spawn_listener(state.agents.clone());
    let events_worker = crate::events::spawn(state.events.clone());
    let router = router::build(state.clone());
    // TCP_NODELAY: a server-sent event (or any response written after its
    // headers) would otherwise wait behind Nagle's algorithm for the
    // client's delayed ACK, about 40 ms on Linux, on every login outcome.
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?
        .tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
    let metrics_server = match state.config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (--metrics-listen)"))?;
            tracing::info!(listen = %addr, "metrics listening");
            let app = router::metrics(state.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            }))
        }
        None => None,
    };
    tracing::info!(issuer = %state.config.issuer, listen = %listen, "agentauth listening");
    let closer = state.clone();
    drop(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Open login event streams end so that shutdown does not wait
        // for them (their clients reconnect).
        closer.agents.login_hub.close();
    })
    .await?;
    upkeep.abort();
    events_worker.abort();
    if let Some(l) = login_listener {
        l.abort();
    }
    revocation_refresh.abort();
    if let Some(m) = metrics_server {
        m.abort();
        let _ = m.await;
    }
    let _ = upkeep.await;
    let _ = revocation_refresh.await;
    // The audit writer ends once the last sender (in State) is gone.
    let _ = tokio::time::timeout(Duration::from_secs(5), audit_task).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn client(cmd: ClientCommand, storage: StorageArgs) -> anyhow::Result<()> {
    let db = store::connect(&database_url(&storage.database_url), 2, None).await?;
    let now = SystemClock.now();
    match cmd {
        ClientCommand::Create(args) => create_client(&db, args, now).await?,
        ClientCommand::List => {
            for c in store::clients::list(&db).await? {
                let grants = &c.metadata.grant_types;
                println!(
                    "{}\t{}\t{}\t{}",
                    c.client_id,
                    c.metadata.client_name.as_deref().unwrap_or("-"),
                    c.metadata.token_endpoint_auth_method.as_str(),
                    grants.join(",")
                );
            }
        }
        ClientCommand::Show { client_id } => {
            let c = store::clients::get(&db, &client_id)
                .await?
                .with_context(|| format!("no client {client_id}"))?;
            let mut v = serde_json::to_value(&c.metadata)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("client_id".into(), json!(c.client_id));
                obj.insert("client_id_issued_at".into(), json!(c.client_id_issued_at));
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ClientCommand::Trace {
            client_id,
            attempt,
            json,
        } => {
            let mut steps = match &attempt {
                Some(a) => store::traces::attempt(&db, a).await?,
                None => {
                    store::traces::recent(&db, &client_id, crate::doctor::KEEP_PER_CLIENT).await?
                }
            };
            steps.retain(|s| s.client_id == client_id);
            if attempt.is_none() {
                steps.reverse();
            }
            if steps.is_empty() {
                eprintln!("no steps recorded for {client_id} in the last week");
            }
            for s in steps {
                if json {
                    println!(
                        "{}",
                        json!({
                            "at": s.at, "attempt": s.attempt, "step": s.step,
                            "outcome": s.outcome, "reason": s.reason, "fix": s.fix,
                        })
                    );
                    continue;
                }
                println!(
                    "{}  {:<13} {:<7} {}{}",
                    crate::clock::utc(s.at),
                    s.step,
                    s.outcome,
                    s.attempt.map(|a| format!("[{a}] ")).unwrap_or_default(),
                    s.reason.unwrap_or_default()
                );
                if let Some(fix) = s.fix {
                    println!("{:>12}  fix: {fix}", "");
                }
            }
        }
        ClientCommand::Delete { client_id } => {
            let event = cli_event(now, "client.deleted", Some(&client_id));
            if !store::clients::delete_audited(&db, &client_id, event).await? {
                bail!("no client {client_id}");
            }
            println!("deleted {client_id}");
        }
        ClientCommand::InitialToken {
            expires_in,
            uses,
            owner,
        } => {
            let owner_id = match owner {
                Some(name) => Some(user_by_name(&db, &name).await?.id),
                None => None,
            };
            let token = random_token()?;
            let uses = i32::try_from(uses.max(1)).unwrap_or(i32::MAX);
            let expires_at = expires_in.map(|s| now + i64::from(s));
            store::initial_tokens::insert(
                &db,
                sha256(token.as_bytes()),
                now,
                expires_at,
                Some(uses),
                owner_id,
            )
            .await?;
            println!("{token}");
        }
    }
    Ok(())
}

async fn create_client(db: &store::Db, args: ClientCreateArgs, now: i64) -> anyhow::Result<()> {
    let request = ClientMetadataRequest {
        client_name: Some(args.name),
        grant_types: Some(args.grant_types),
        scope: args.scope,
        redirect_uris: (!args.redirect_uris.is_empty()).then_some(args.redirect_uris),
        token_endpoint_auth_method: Some(args.auth_method),
        ..Default::default()
    };
    let grants = crate::grants::Registry::standard();
    for uri in &args.introspect {
        if uri != "*" {
            ResourceUri::parse(uri)
                .map_err(|why| anyhow::anyhow!("--introspect {uri:?}: {why}"))?;
        }
    }
    let policy = RegistrationPolicy {
        scopes_supported: None,
        insecure_fetch: false,
        grants: &grants,
    };
    let metadata = ClientMetadata::validate(request, &policy)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.error, e.description.unwrap_or_default()))?;
    let Registered { record, secret, .. } = register(
        db,
        NewClient {
            metadata,
            kind: ClientKind::Operator,
            introspects: args.introspect,
            manageable: false,
        },
        Requester {
            subject: Some("cli".into()),
            ip: None,
            via: "cli",
        },
        now,
    )
    .await?;
    let client_id = &record.client_id;
    if args.json {
        let mut v = serde_json::to_value(&record.metadata)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("client_id".into(), json!(client_id));
            if let Some(s) = &secret {
                obj.insert("client_secret".into(), json!(s));
            }
        }
        println!("{v}");
    } else {
        println!("client_id:     {client_id}");
        if let Some(s) = &secret {
            println!("client_secret: {s}   (shown once; stored only as a hash)");
        }
    }
    Ok(())
}

fn cli_event(now: i64, event: &'static str, client_id: Option<&str>) -> AuditEvent {
    AuditEvent {
        at: now,
        event,
        client_id: client_id.map(str::to_string),
        subject: Some("cli".into()),
        ip: None,
        detail: json!({ "via": "cli" }),
    }
}

async fn ca_command(cmd: CaCommand, storage: StorageArgs) -> anyhow::Result<()> {
    let db = store::connect(&database_url(&storage.database_url), 2, None).await?;
    let now = SystemClock.now();
    match cmd {
        CaCommand::List => {
            let rows = store::bridge::epochs(&db).await?;
            let issuing = rows
                .iter()
                .filter(|r| r.dropped_at.is_none() && r.started_at <= now && r.not_after > now)
                .map(|r| r.epoch)
                .max();
            println!("epoch\tstate\tstarted_at\tnot_after\tsha256");
            for r in rows.iter().rev() {
                let state = if r.dropped_at.is_some() {
                    "dropped"
                } else if Some(r.epoch) == issuing {
                    "current"
                } else if issuing.is_some_and(|i| r.epoch == i - 1) && r.not_after > now {
                    "previous"
                } else {
                    "retired"
                };
                println!(
                    "{}\t{state}\t{}\t{}\t{}",
                    r.epoch,
                    r.started_at,
                    r.not_after,
                    crate::crypto::b64url(&sha256(&r.certificate_der))
                );
            }
        }
        CaCommand::Rotate {
            drop_previous,
            issuer,
            ca_epoch,
        } => {
            let kek = crate::agents::bridge::ca::ca_kek(&load_kek(&storage)?)?;
            let epoch = crate::agents::bridge::ca::rotate(
                &db,
                &kek,
                &crate::agents::bridge::ca::issuer_host(&issuer),
                i64::from(ca_epoch.max(60)),
                drop_previous,
                now,
            )
            .await?;
            println!(
                "started epoch {epoch}{}",
                if drop_previous {
                    "; older CAs dropped from the bundle"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

async fn keys_command(cmd: KeysCommand, storage: StorageArgs) -> anyhow::Result<()> {
    let db = store::connect(&database_url(&storage.database_url), 2, None).await?;
    let now = SystemClock.now();
    match cmd {
        KeysCommand::List => {
            let rows = store::keys::list(&db).await?;
            // Per algorithm, the newest active key signs (for the nodes
            // whose --signing-alg it is).
            let signs = |r: &store::keys::KeyRow| {
                let live = |k: &store::keys::KeyRow| {
                    k.activates_at <= now && k.retire_after.is_none_or(|t| t > now)
                };
                live(r)
                    && !rows.iter().any(|o| {
                        o.alg == r.alg
                            && live(o)
                            && (o.activates_at, &o.kid) > (r.activates_at, &r.kid)
                    })
            };
            println!("kid\talg\tstate\tactivates_at\tretire_after");
            for r in &rows {
                let state = if signs(r) {
                    "signing"
                } else if r.activates_at > now {
                    "next"
                } else if r.retire_after.is_some_and(|t| t <= now) {
                    "expired"
                } else {
                    "retired"
                };
                let retire = r
                    .retire_after
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    r.kid, r.alg, state, r.activates_at, retire
                );
            }
        }
        KeysCommand::Rotate {
            publish_delay,
            access_token_ttl,
            signing_alg,
        } => {
            let kek = load_kek(&storage)?;
            // Refuse to rotate under a KEK that cannot open the current keys.
            keys::KeyRing::load_or_init(
                &db,
                load_kek(&storage)?,
                signing_alg,
                now,
                i64::from(access_token_ttl),
            )
            .await?;
            let row = keys::rotate(
                &db,
                &kek,
                signing_alg,
                now,
                i64::from(publish_delay),
                i64::from(access_token_ttl),
            )
            .await?;
            println!(
                "published {} (signs from {}, in {publish_delay} s)",
                row.kid, row.activates_at
            );
        }
    }
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("AGENTAUTH_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn user_by_name(db: &store::Db, name: &str) -> anyhow::Result<crate::store::users::User> {
    store::users::by_username(db, name)
        .await?
        .with_context(|| format!("no user {name}"))
}

/// Reads a JWK or JWK set from a file (`-`: standard input).
fn read_keys(path: &Path) -> anyhow::Result<Vec<jsonwebtoken::jwk::Jwk>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    crate::agents::parse_keys(&value).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))
}

fn agent_json(
    agent: &store::agents::AgentRow,
    client: Option<&ClientRecord>,
    owner: &str,
) -> serde_json::Value {
    let keys: Vec<_> = client
        .and_then(|c| c.metadata.jwks.as_ref())
        .map(|set| {
            set.keys
                .iter()
                .map(|k| {
                    json!({
                        "kid": k.common.key_id,
                        "jkt": agentauth_resource::jwk::thumbprint(k).ok(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "agent_id": agent.id,
        "name": agent.name,
        "owner": owner,
        "status": if agent.active { "active" } else { "disabled" },
        "scope": agent.scope,
        "resources": agent.resources,
        // `agent`: an operator vouched for it; `owner_agent`: its owner
        // made it in the console.
        "kind": client.map(|c| c.kind),
        "keys": keys,
        "created_at": agent.created_at,
        "disabled_at": agent.disabled_at,
    })
}

async fn agent_command(
    cmd: crate::config::AgentCommand,
    storage: StorageArgs,
) -> anyhow::Result<()> {
    use crate::config::AgentCommand;
    let db = store::connect(&database_url(&storage.database_url), 2, None).await?;
    let now = SystemClock.now();
    let grants = crate::grants::Registry::standard();
    let owner_name = |id: String| {
        let db = db.clone();
        async move {
            Ok::<_, anyhow::Error>(
                store::users::by_id(&db, &id)
                    .await?
                    .map_or(id, |u| u.username),
            )
        }
    };
    let keys_of = |agent_id: String| {
        let db = db.clone();
        async move {
            let client = store::clients::get(&db, &agent_id)
                .await?
                .with_context(|| format!("no agent {agent_id}"))?;
            Ok::<_, anyhow::Error>(
                client
                    .metadata
                    .jwks
                    .clone()
                    .unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() }),
            )
        }
    };
    match cmd {
        AgentCommand::Create(args) => {
            let owner = user_by_name(&db, &args.owner).await?;
            let mut keys = Vec::new();
            for path in &args.jwk {
                keys.extend(read_keys(path)?);
            }
            let scope = crate::oauth::scope::Scope::parse(&args.scope)?;
            let (agent, client) = crate::agents::create(
                &db,
                &grants,
                crate::agents::NewAgent {
                    name: args.name,
                    owner_id: owner.id,
                    scope,
                    resources: args.resources,
                    keys: jsonwebtoken::jwk::JwkSet { keys },
                },
                now,
                "cli",
            )
            .await?;
            if args.json {
                println!("{}", agent_json(&agent, Some(&client), &owner.username));
            } else {
                println!("{}", agent.id);
            }
        }
        AgentCommand::List { owner } => {
            let owner_id = match owner {
                Some(name) => Some(user_by_name(&db, &name).await?.id),
                None => None,
            };
            for a in store::agents::list(&db, owner_id.as_deref()).await? {
                let status = if a.active { "active" } else { "disabled" };
                let owner = owner_name(a.owner_id.clone()).await?;
                println!("{}\t{}\t{}\t{}\t{}", a.id, status, owner, a.name, a.scope);
            }
        }
        AgentCommand::Show { agent_id } => {
            let agent = store::agents::get(&db, &agent_id)
                .await?
                .with_context(|| format!("no agent {agent_id}"))?;
            let client = store::clients::get(&db, &agent_id).await?;
            let owner = owner_name(agent.owner_id.clone()).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&agent_json(&agent, client.as_ref(), &owner))?
            );
        }
        AgentCommand::AddKey { agent_id, jwk } => {
            let mut set = keys_of(agent_id.clone()).await?;
            for key in read_keys(&jwk)? {
                if set
                    .keys
                    .iter()
                    .any(|k| k.common.key_id == key.common.key_id)
                {
                    bail!(
                        "agent {agent_id} already has a key with kid {:?}",
                        key.common.key_id
                    );
                }
                set.keys.push(key);
            }
            crate::agents::set_keys(&db, &grants, &agent_id, set, now, "cli").await?;
            println!("keys of {agent_id} updated");
        }
        AgentCommand::RemoveKey { agent_id, kid } => {
            let mut set = keys_of(agent_id.clone()).await?;
            let before = set.keys.len();
            set.keys
                .retain(|k| k.common.key_id.as_deref() != Some(kid.as_str()));
            if set.keys.len() == before {
                bail!("agent {agent_id} has no key {kid}");
            }
            if set.keys.is_empty() {
                bail!("an agent keeps at least one key; add another first, or disable the agent");
            }
            crate::agents::set_keys(&db, &grants, &agent_id, set, now, "cli").await?;
            println!("key {kid} removed from {agent_id}");
        }
        AgentCommand::Disable { agent_id } => set_agent_active(&db, agent_id, false, now).await?,
        AgentCommand::Enable { agent_id } => set_agent_active(&db, agent_id, true, now).await?,
        AgentCommand::Delete { agent_id } => {
            let event = cli_event(now, "agent.deleted", Some(&agent_id));
            if !store::agents::delete(&db, &agent_id, event).await? {
                bail!("no agent {agent_id}");
            }
            println!("deleted {agent_id}");
        }
    }
    Ok(())
}

/// The kill switch from the CLI (other nodes see it within a second).
async fn set_agent_active(
    db: &store::Db,
    agent_id: String,
    active: bool,
    now: i64,
) -> anyhow::Result<()> {
    let event = AuditEvent {
        at: now,
        event: if active {
            "agent.enabled"
        } else {
            "agent.disabled"
        },
        client_id: Some(agent_id.clone()),
        subject: Some("cli".into()),
        ip: None,
        detail: json!({ "via": "cli" }),
    };
    if !store::agents::set_active(db, &agent_id, active, now, event).await? {
        bail!("no agent {agent_id}");
    }
    println!("{agent_id} {}", if active { "enabled" } else { "disabled" });
    Ok(())
}

async fn user_command(cmd: UserCommand, storage: StorageArgs) -> anyhow::Result<()> {
    let db = store::connect(&database_url(&storage.database_url), 2, None).await?;
    let now = SystemClock.now();
    match cmd {
        UserCommand::Create { username, admin } => {
            let user = crate::accounts::create_user(&db, &username, read_password()?, now).await?;
            if admin {
                store::users::set_admin(&db, &user.id, true).await?;
            }
            println!(
                "created {} {} ({})",
                if admin { "operator" } else { "user" },
                user.username,
                user.id
            );
        }
        UserCommand::List => {
            for u in store::users::list(&db).await? {
                println!("{}\t{}\t{}", u.username, u.id, u.created_at);
            }
        }
        UserCommand::Delete { username } => {
            store::users::delete(&db, &username, now, store::users::deleted_event(now, "cli"))
                .await?
                .with_context(|| format!("no user {username}"))?;
            println!("deleted {username}");
        }
        UserCommand::SetPassword { username } => {
            let password = read_password()?;
            if password.chars().count() < 8 {
                bail!("password must be at least 8 characters");
            }
            let hash = crate::accounts::hash_password(password).await?;
            if !store::users::set_password(&db, &username, hash, now).await? {
                bail!("no user {username}");
            }
            println!("password set for {username}");
        }
    }
    Ok(())
}
