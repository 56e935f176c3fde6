//! An MCP server protected by agentauth: rmcp's streamable HTTP transport
//! behind the resource kit (`agentauth-resource`).
//!
//! ```text
//! cargo run --example mcp_server -- --issuer http://127.0.0.1:8080
//! ```
//!
//! It serves its RFC 9728 metadata, answers unauthenticated requests with
//! a `WWW-Authenticate` challenge naming that metadata (MCP clients follow
//! it to agentauth, register, and get a token), and offers four tools:
//!
//! - `whoami` (scope `mcp`): who is calling, which agent, whose, with what
//!   scopes and through which delegation chain;
//! - `admin_echo` (scope `mcp:admin`): a `tools/call` without it is a 403
//!   `insufficient_scope`, and the client steps up;
//! - `list_notes` (scope `mcp`): the notes, held in memory (three to start
//!   with, `n1` to `n3`);
//! - `delete_note {id}`: needs its owner's approval of each call. Called
//!   with an ordinary token it answers the JSON-RPC error -31403
//!   (`agentauth_resource::guard::APPROVAL_REQUIRED`) whose `data` names
//!   the exact `authorization_details` to ask agentauth for (a CIBA
//!   request the owner approves); the DPoP-bound token that carries them
//!   is good for that one call, once.
//!
//! A token is spent in this process's memory by default; several
//! instances of one resource share a table instead (`--spent-tokens
//! sqlite:///var/lib/mcp/spent.db?mode=rwc`, or a `postgres://` URL), so
//! that a token's second use is refused whichever instance sees it.
//! Tokens' status lists are checked unless `--no-status-check`. Register
//! the resource at agentauth: `agentauth serve --resource
//! http://127.0.0.1:8090/mcp --scopes "mcp mcp:admin"`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentauth_resource::guard::{Caller, Guard, protect};
use agentauth_resource::introspection::Introspector;
use agentauth_resource::once::{SpendError, SpendFuture, SpentTokens};
use agentauth_resource::remote::RemoteKeys;
use agentauth_resource::report::Reporter;
use agentauth_resource::status_cache::StatusListPolicy;
use agentauth_resource::{ProtectedResourceMetadata, TokenKind};
use clap::Parser;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};
use serde_json::json;

/// The scope every call needs.
pub const BASIC_SCOPE: &str = "mcp";
/// The scope `admin_echo` needs besides.
pub const ADMIN_SCOPE: &str = "mcp:admin";
/// The tool whose every call needs its owner's approval.
pub const APPROVAL_TOOL: &str = "delete_note";

/// Example MCP server protected by agentauth.
#[derive(Parser, Debug, Clone)]
pub struct Options {
    /// The agentauth issuer that protects this server.
    #[arg(long, env = "AGENTAUTH_ISSUER")]
    pub issuer: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The resource URL clients use (the `aud` of its tokens); default
    /// `http://{listen}/mcp`.
    #[arg(long)]
    pub resource: Option<String>,
    /// Introspection mode: check every token at agentauth too (cached for
    /// a second), as this client (`agentauth client create --introspect
    /// <resource>`), so that revocation and the agent kill switch bite at
    /// once.
    #[arg(long, requires = "introspection_secret")]
    pub introspection_client: Option<String>,
    #[arg(long, env = "MCP_INTROSPECTION_SECRET", hide_env_values = true)]
    pub introspection_secret: Option<String>,
    /// Report refused tokens to agentauth (`POST /doctor/refusals`), as
    /// this client (one that may introspect this resource), so that the
    /// operator sees in the client's trace why its calls fail here.
    #[arg(long, requires = "report_secret")]
    pub report_client: Option<String>,
    #[arg(long, env = "MCP_REPORT_SECRET", hide_env_values = true)]
    pub report_secret: Option<String>,
    /// Serve the tools with no protection at all (benchmarks measure the
    /// cost of protection against this).
    #[arg(long)]
    pub unprotected: bool,
    /// Keep MCP sessions (`Mcp-Session-Id`, server-sent events on GET).
    /// Without it the server is stateless: every POST stands alone and is
    /// answered with JSON, so any number of instances can serve one
    /// resource and concurrent calls of one client run in parallel.
    #[arg(long)]
    pub sessions: bool,
    /// Take only DPoP-bound tokens (RFC 9449): the RFC 9728 metadata says
    /// `dpop_bound_access_tokens_required`, and a bearer token is refused.
    /// Register the resource at agentauth with `dpop = "required"` too.
    #[arg(long)]
    pub dpop_required: bool,
    /// Do not check tokens' status lists (draft-ietf-oauth-status-list).
    /// By default a token or passport with a `status` claim is looked up
    /// in agentauth's list (fetched, verified, cached for its `ttl`), so
    /// that a revoked token or a killed agent is refused here within the
    /// list's ttl; tokens without `status` are accepted.
    #[arg(long)]
    pub no_status_check: bool,
    /// Keep a status list at least this long, whatever its `ttl` says.
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    pub status_min_ttl: u64,
    /// Fetch a status list again after at most this long, whatever its
    /// `ttl` says.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub status_max_ttl: u64,
    /// While a status list cannot be fetched, keep using the last one this
    /// long past its ttl (never past its `exp`), then answer 503 with
    /// `Retry-After`.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub status_grace: u64,
    /// Keep spent approval tokens (the DPoP-bound tokens that approve one
    /// `delete_note` call) in this database, shared by every instance of
    /// this resource, instead of this process's memory: a token is then
    /// refused at its second use whichever instance sees it. A SQLite URL
    /// (`sqlite:///var/lib/mcp/spent.db?mode=rwc`) or a PostgreSQL one
    /// (`postgres://user:pass@host/db`); the table `mcp_spent_tokens` is
    /// created if missing.
    #[arg(
        long,
        env = "MCP_SPENT_TOKENS",
        hide_env_values = true,
        value_name = "DATABASE_URL"
    )]
    pub spent_tokens: Option<String>,
}

impl Options {
    /// The status-list policy of `--status-*` (`None`: `--no-status-check`).
    pub fn status_policy(&self) -> Option<StatusListPolicy> {
        (!self.no_status_check).then(|| StatusListPolicy {
            min_ttl: Duration::from_secs(self.status_min_ttl),
            max_ttl: Duration::from_secs(self.status_max_ttl),
            grace: Duration::from_secs(self.status_grace),
            ..StatusListPolicy::default()
        })
    }

    pub fn resource(&self) -> String {
        self.resource
            .clone()
            .unwrap_or_else(|| format!("http://{}/mcp", self.listen))
    }
}

/// The notes, by id, shared by every MCP session of one server.
pub type Notes = Arc<Mutex<BTreeMap<String, String>>>;

/// The notes a server starts with.
pub fn seed_notes() -> Notes {
    Arc::new(Mutex::new(BTreeMap::from([
        ("n1".to_string(), "Buy oat milk".to_string()),
        (
            "n2".to_string(),
            "Call the plumber about the boiler".to_string(),
        ),
        (
            "n3".to_string(),
            "Renew the passport before June".to_string(),
        ),
    ])))
}

/// The MCP tools.
#[derive(Clone)]
pub struct Tools {
    tool_router: ToolRouter<Self>,
    notes: Notes,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// Text to echo back.
    pub text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct NoteId {
    /// The id of the note (`list_notes` shows them).
    pub id: String,
}

/// The verified caller the kit put in the HTTP request's extensions
/// (rmcp hands tools the request's `Parts`).
fn caller(parts: &axum::http::request::Parts) -> Option<&Caller> {
    parts.extensions.get::<Caller>()
}

#[tool_router]
impl Tools {
    /// Tools over a fresh set of [`seed_notes`].
    pub fn new() -> Self {
        Self::with_notes(seed_notes())
    }

    /// Tools over `notes` (shared: the server makes a `Tools` per
    /// session, or per request when stateless).
    pub fn with_notes(notes: Notes) -> Self {
        Self {
            tool_router: Self::tool_router(),
            notes,
        }
    }

    fn notes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[tool(
        description = "Who is calling: the subject, the agent and its owner, the scopes, and the delegation chain (act)"
    )]
    async fn whoami(
        &self,
        Extension(parts): Extension<axum::http::request::Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(caller) = caller(&parts) else {
            return Ok(CallToolResult::success(vec![ContentBlock::text(
                json!({"sub": null, "protected": false}).to_string(),
            )]));
        };
        let c = &caller.claims;
        let chain: Vec<_> = c
            .act
            .iter()
            .flat_map(|a| a.chain())
            .map(|a| json!({"sub": a.sub, "agent_id": a.agent_id, "client_id": a.client_id}))
            .collect();
        let answer = json!({
            "sub": c.sub,
            "client_id": c.client_id,
            "agent": caller.agent(),
            "owner": c.owner,
            "scopes": c.scopes().collect::<Vec<_>>(),
            "act": chain,
            "token": match caller.kind { TokenKind::Access => "access_token", TokenKind::Passport => "passport" },
            "dpop_bound": c.cnf.is_some(),
            "expires_at": c.exp,
        });
        Ok(CallToolResult::success(vec![ContentBlock::text(
            answer.to_string(),
        )]))
    }

    #[tool(description = "Echo text back; needs the mcp:admin scope")]
    async fn admin_echo(
        &self,
        Parameters(EchoArgs { text }): Parameters<EchoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }

    #[tool(description = "List the notes: id and text of each")]
    async fn list_notes(&self) -> Result<CallToolResult, ErrorData> {
        let notes: Vec<_> = self
            .notes()
            .iter()
            .map(|(id, text)| json!({"id": id, "text": text}))
            .collect();
        Ok(CallToolResult::success(vec![ContentBlock::text(
            json!(notes).to_string(),
        )]))
    }

    #[tool(
        description = "Delete a note. Each call needs its owner's approval: without it the server answers error -31403 with the authorization_details to ask the authorization server for"
    )]
    async fn delete_note(
        &self,
        Parameters(NoteId { id }): Parameters<NoteId>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match self.notes().remove(&id) {
            Some(_) => CallToolResult::success(vec![ContentBlock::text(format!("deleted {id}"))]),
            None => CallToolResult::error(vec![ContentBlock::text(format!("no note {id}"))]),
        })
    }
}

impl Default for Tools {
    fn default() -> Self {
        Self::new()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "agentauth-example",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Call whoami to see how agentauth identifies you. delete_note needs its owner's \
                 approval of each call: on error -31403, ask the authorization server for a token \
                 with the error's authorization_details and call again with it.",
            )
    }
}

/// The server's router: `/mcp` (protected unless `unprotected`) and the
/// RFC 9728 metadata at its well-known paths.
pub async fn app(options: &Options) -> anyhow::Result<axum::Router> {
    let resource = options.resource();
    let host = url::Url::parse(&resource)?
        .host_str()
        .unwrap_or("localhost")
        .to_string();
    let notes = seed_notes();
    let mcp = StreamableHttpService::new(
        move || Ok(Tools::with_notes(notes.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_allowed_hosts(["localhost".to_string(), "127.0.0.1".to_string(), host])
            // Stateless JSON unless sessions are asked for (`--sessions`).
            .with_legacy_session_mode(options.sessions)
            .with_json_response(!options.sessions),
    );
    let router = axum::Router::new().nest_service("/mcp", mcp);
    if options.unprotected {
        return Ok(router);
    }

    let mut metadata = ProtectedResourceMetadata::new(&resource, &options.issuer);
    metadata.resource_name = Some("agentauth example MCP server".into());
    metadata.dpop_bound_access_tokens_required = options.dpop_required;
    metadata.scopes_supported = vec![BASIC_SCOPE.into(), ADMIN_SCOPE.into()];
    metadata.scope_descriptions.insert(
        BASIC_SCOPE.into(),
        "Use the example's tools (whoami, list_notes; delete_note with its owner's approval of each call)".into(),
    );
    metadata.scope_descriptions.insert(
        ADMIN_SCOPE.into(),
        "Use the example's admin tool (admin_echo)".into(),
    );

    let keys = RemoteKeys::discover(&options.issuer).await?;
    let mut guard = Guard::remote(&metadata, keys);
    // Clients ask for the basic scope first and step up when a tool needs
    // more (RFC 6750 §3 `scope` in the 401 challenge).
    guard.context.scope = Some(BASIC_SCOPE.into());
    guard
        .tool_scopes
        .insert("whoami".into(), vec![BASIC_SCOPE.into()]);
    guard.tool_scopes.insert(
        "admin_echo".into(),
        vec![BASIC_SCOPE.into(), ADMIN_SCOPE.into()],
    );
    guard
        .tool_scopes
        .insert("list_notes".into(), vec![BASIC_SCOPE.into()]);
    // An ordinary token needs the basic scope to be told which approval
    // to ask for; the approval token itself needs no scope.
    guard
        .tool_scopes
        .insert(APPROVAL_TOOL.into(), vec![BASIC_SCOPE.into()]);
    guard.approval_tools.insert(APPROVAL_TOOL.into());
    if let Some(url) = &options.spent_tokens {
        guard = guard.spent_tokens(Arc::new(SqlSpentTokens::connect(url).await?));
    }
    if let Some(policy) = options.status_policy() {
        guard = guard.check_status(policy)?;
    }
    if let (Some(id), Some(secret)) = (&options.introspection_client, &options.introspection_secret)
    {
        let introspector = Introspector::discover(&options.issuer, id, secret)
            .await?
            .cache_for(Duration::from_secs(1));
        guard = guard.with_introspection(introspector);
    }
    if let (Some(id), Some(secret)) = (&options.report_client, &options.report_secret) {
        guard = guard.report_refusals(Reporter::for_issuer(&options.issuer, id, secret)?);
    }
    let guard = Arc::new(guard);
    Ok(router
        .layer(axum::middleware::from_fn_with_state(guard, protect))
        .merge(metadata.router()))
}

/// Spent approval tokens in a table that every instance of the resource
/// shares (`--spent-tokens`): the first `INSERT` of a `jti` affects one
/// row, every later one none (`ON CONFLICT DO NOTHING`, atomic in SQLite
/// and PostgreSQL alike), so exactly one instance accepts a token. Rows
/// past their `exp` are purged at most once a minute.
pub struct SqlSpentTokens {
    db: DatabaseConnection,
    /// When the last purge ran (Unix seconds).
    purged: AtomicI64,
}

impl SqlSpentTokens {
    /// Connects to `url` (SQLite or PostgreSQL) and creates the table if
    /// it is missing.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut options = sea_orm::ConnectOptions::new(url);
        options.sqlx_logging(false);
        let db = sea_orm::Database::connect(options).await?;
        db.execute_unprepared(
            "CREATE TABLE IF NOT EXISTS mcp_spent_tokens (jti TEXT PRIMARY KEY, exp BIGINT NOT NULL)",
        )
        .await?;
        Ok(Self {
            db,
            purged: AtomicI64::new(0),
        })
    }

    fn statement(&self, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
        let backend = self.db.get_database_backend();
        // `$1` for PostgreSQL, `?` for SQLite (and MySQL).
        let sql = match backend {
            DatabaseBackend::Postgres => sql.to_string(),
            _ => (1..=values.len())
                .rev()
                .fold(sql.to_string(), |s, i| s.replace(&format!("${i}"), "?")),
        };
        Statement::from_sql_and_values(backend, sql, values)
    }

    async fn spend_now(&self, jti: &str, exp: i64) -> Result<bool, sea_orm::DbErr> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let last = self.purged.load(Ordering::Relaxed);
        if now - last >= 60
            && self
                .purged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.db
                .execute(self.statement(
                    "DELETE FROM mcp_spent_tokens WHERE exp < $1",
                    vec![now.into()],
                ))
                .await?;
        }
        let inserted = self
            .db
            .execute(self.statement(
                "INSERT INTO mcp_spent_tokens (jti, exp) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
                vec![jti.into(), exp.into()],
            ))
            .await?;
        Ok(inserted.rows_affected() == 1)
    }
}

impl SpentTokens for SqlSpentTokens {
    fn spend<'a>(&'a self, jti: &'a str, exp: i64) -> SpendFuture<'a> {
        Box::pin(async move { self.spend_now(jti, exp).await.map_err(SpendError::new) })
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let options = Options::parse();
    let app = app(&options).await?;
    // Small responses go out at once (no Nagle delay behind a client's
    // delayed ACK).
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(
        resource = %options.resource(),
        issuer = %options.issuer,
        protected = !options.unprotected,
        "example MCP server listening"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
