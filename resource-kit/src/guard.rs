//! The kit in an axum service (feature `axum`): a [`Guard`] in the
//! router's state, and a [`Caller`] extractor that hands handlers the
//! verified caller or answers with the right challenge (RFC 6750 §3,
//! RFC 9449 §7.1, `resource_metadata` per RFC 9728 §5.1).
//!
//! ```no_run
//! use std::sync::Arc;
//! use agentauth_resource::guard::{Caller, Guard};
//! use agentauth_resource::{ProtectedResourceMetadata, StaticKeys};
//!
//! async fn whoami(caller: Caller) -> Result<String, agentauth_resource::guard::Refusal> {
//!     caller.require(&["tools:read"])?;
//!     Ok(format!("{} (agent {:?})", caller.claims.sub, caller.claims.agent_id))
//! }
//!
//! # fn build(keys: StaticKeys) -> axum::Router {
//! let metadata = ProtectedResourceMetadata::new("https://mcp.example.com/mcp", "https://auth.example.com");
//! let guard = Arc::new(Guard::new(&metadata, Arc::new(keys)));
//! axum::Router::new()
//!     .route("/mcp", axum::routing::post(whoami))
//!     .merge(metadata.router())
//!     .with_state(guard)
//! # }
//! ```
//!
//! An MCP service behind [`protect`], with a tool whose every call needs
//! its owner's approval (see the crate docs, "Approvals of one tool
//! call"), spent in a store the resource's instances share:
//!
//! ```no_run
//! use std::sync::Arc;
//! use agentauth_resource::guard::{Guard, protect};
//! use agentauth_resource::once::SpentTokens;
//! use agentauth_resource::{ProtectedResourceMetadata, StaticKeys};
//!
//! # fn build(keys: StaticKeys, shared: Arc<dyn SpentTokens>, mcp: axum::Router) -> axum::Router {
//! let metadata = ProtectedResourceMetadata::new("https://mcp.example.com/mcp", "https://auth.example.com");
//! let mut guard = Guard::new(&metadata, Arc::new(keys)).spent_tokens(shared);
//! guard.tool_scopes.insert("delete_note".into(), vec!["mcp".into()]);
//! guard.approval_tools.insert("delete_note".into());
//! mcp.layer(axum::middleware::from_fn_with_state(Arc::new(guard), protect))
//!     .merge(metadata.router())
//! # }
//! ```

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::claims::AccessTokenClaims;
use crate::jwt::KeySource;
use crate::metadata::ProtectedResourceMetadata;
use crate::verifier::{
    ChallengeContext, ResourceError, ResourceVerifier, TokenKind, Verified, require_scopes,
};

/// One protected resource: its verifier, its URL, and what its
/// challenges say.
pub struct Guard {
    pub verifier: ResourceVerifier<Arc<dyn KeySource>>,
    /// The resource URL as clients address it (the DPoP `htu`).
    pub url: String,
    pub context: ChallengeContext,
    /// MCP tools that need scopes beyond the token's basic ones, by tool
    /// name: [`protect`] answers a `tools/call` of one with 403
    /// `insufficient_scope` naming them.
    pub tool_scopes: std::collections::HashMap<String, Vec<String>>,
    /// MCP tools whose every call needs its owner's approval: [`protect`]
    /// lets a `tools/call` of one through only with a token that approves
    /// exactly that call (RFC 9396 `mcp_tool_call`, see
    /// [`crate::details`]), once; an ordinary token gets the JSON-RPC
    /// error [`APPROVAL_REQUIRED`] naming the approval to ask for.
    pub approval_tools: std::collections::HashSet<String>,
    /// The authorization servers of this resource (RFC 9728
    /// `authorization_servers`), named in [`APPROVAL_REQUIRED`] errors.
    pub authorization_servers: Vec<String>,
    /// Where approval tokens are spent ([`Self::spent_tokens`]).
    spent: Arc<dyn crate::once::SpentTokens>,
    #[cfg(feature = "remote")]
    remote: Option<Arc<crate::remote::RemoteKeys>>,
    #[cfg(feature = "remote")]
    introspector: Option<crate::introspection::Introspector>,
    #[cfg(feature = "remote")]
    reporter: Option<crate::report::Reporter>,
    #[cfg(feature = "remote")]
    status_lists: Option<crate::status_cache::StatusListCache>,
}

impl Guard {
    /// A guard for the resource `metadata` describes, verifying with `keys`.
    pub fn new(metadata: &ProtectedResourceMetadata, keys: Arc<dyn KeySource>) -> Self {
        let issuer = metadata
            .authorization_servers
            .first()
            .cloned()
            .unwrap_or_default();
        Self {
            verifier: ResourceVerifier::new(issuer, metadata.resource.clone(), keys)
                .require_dpop(metadata.dpop_bound_access_tokens_required),
            url: metadata.resource.clone(),
            context: ChallengeContext {
                resource_metadata: metadata.metadata_url().ok(),
                scope: (!metadata.scopes_supported.is_empty())
                    .then(|| metadata.scopes_supported.join(" ")),
            },
            tool_scopes: Default::default(),
            approval_tools: Default::default(),
            authorization_servers: metadata.authorization_servers.clone(),
            spent: Arc::new(crate::once::MemorySpentTokens::default()),
            #[cfg(feature = "remote")]
            remote: None,
            #[cfg(feature = "remote")]
            introspector: None,
            #[cfg(feature = "remote")]
            reporter: None,
            #[cfg(feature = "remote")]
            status_lists: None,
        }
    }

    /// Spend approval tokens in `store` instead of this process's memory
    /// ([`crate::once::MemorySpentTokens`]): a resource served by several
    /// instances gives them all one shared store, so that an approval
    /// token is good for one call whichever instance sees it (see
    /// [`crate::once`]).
    pub fn spent_tokens(self, store: Arc<dyn crate::once::SpentTokens>) -> Self {
        Self {
            spent: store,
            ..self
        }
    }

    /// Accept agent passports naming this resource (default: refused; see
    /// [`ResourceVerifier::accept_passports`]). A passport's [`Caller`] has
    /// `kind` [`TokenKind::Passport`], the agent's identity, and no scope
    /// unless [`Self::passport_scopes`] grants some. In introspection mode
    /// a passport is also checked live, like a token.
    pub fn accept_passports(self, accept: bool) -> Self {
        Self {
            verifier: self.verifier.accept_passports(accept),
            ..self
        }
    }

    /// This resource's policy for accepted passports: the scopes an
    /// agent's identity (`PassportClaims`: agent, owner, name, key) may
    /// use here; see [`ResourceVerifier::passport_scopes`].
    pub fn passport_scopes(
        self,
        policy: impl Fn(&crate::claims::PassportClaims) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            verifier: self.verifier.passport_scopes(policy),
            ..self
        }
    }

    /// Introspection mode: every token that passes the local checks is
    /// also checked live at the authorization server (cached briefly), so
    /// revocation and the agent kill switch bite here at once.
    #[cfg(feature = "remote")]
    pub fn with_introspection(mut self, introspector: crate::introspection::Introspector) -> Self {
        self.introspector = Some(introspector);
        self
    }

    /// Check the status of every token and passport that carries a
    /// `status` claim against the issuer's status lists
    /// (draft-ietf-oauth-status-list), verified with this guard's keys
    /// (for a [`Self::remote`] guard, a list signed under an unknown `kid`
    /// refetches them): a revoked token is refused (401 `invalid_token`)
    /// within the list's `ttl`, and when the lists cannot be fetched the
    /// `policy` decides (grace, then 503 with `Retry-After`). See
    /// [`crate::status_cache`]. Off by default; off, it costs nothing.
    #[cfg(feature = "remote")]
    pub fn check_status(
        mut self,
        policy: crate::status_cache::StatusListPolicy,
    ) -> Result<Self, crate::remote::RemoteError> {
        self.status_lists = Some(crate::status_cache::StatusListCache::build(
            self.verifier.issuer.clone(),
            self.verifier.keys.clone(),
            self.remote.clone(),
            policy,
        )?);
        Ok(self)
    }

    /// The status lists [`Self::check_status`] reads, when it is on.
    #[cfg(feature = "remote")]
    pub fn status_lists(&self) -> Option<&crate::status_cache::StatusListCache> {
        self.status_lists.as_ref()
    }

    /// Tell the authorization server about refused tokens (see
    /// [`crate::report`]), so that its operator sees in the client's
    /// trace why its calls fail here.
    #[cfg(feature = "remote")]
    pub fn report_refusals(mut self, reporter: crate::report::Reporter) -> Self {
        self.reporter = Some(reporter);
        self
    }

    /// Whether refusals are reported (callers then keep their token).
    fn reports(&self) -> bool {
        #[cfg(feature = "remote")]
        return self.reporter.is_some();
        #[cfg(not(feature = "remote"))]
        false
    }

    /// Reports a refusal of `token`, when [`Self::report_refusals`] is on.
    fn report(&self, token: Option<&str>, error: &ResourceError) {
        #[cfg(feature = "remote")]
        if let (Some(reporter), Some(token)) = (&self.reporter, token) {
            reporter.report(token, &self.url, error);
        }
        #[cfg(not(feature = "remote"))]
        let _ = (token, error);
    }

    /// A guard whose keys come from the authorization server, refetched
    /// when a token names an unknown `kid`.
    #[cfg(feature = "remote")]
    pub fn remote(metadata: &ProtectedResourceMetadata, keys: crate::remote::RemoteKeys) -> Self {
        let keys = Arc::new(keys);
        let mut guard = Self::new(metadata, keys.clone());
        guard.remote = Some(keys);
        guard
    }

    /// The response for a refusal.
    pub fn reject(&self, error: &ResourceError) -> Response {
        error.headers_in(&self.context).into_response()
    }

    /// The whole check of one request: keys refetched for an unknown
    /// `kid` (remote guards), the local verification, the token's status
    /// when [`Self::check_status`] is on, then introspection when it is on.
    pub async fn check(&self, parts: &Parts) -> Result<Verified, ResourceError> {
        self.check_when(parts, std::time::SystemTime::now()).await
    }

    /// [`Self::check`] at `now` (Unix seconds) instead of the system clock.
    pub async fn check_at(&self, parts: &Parts, now: i64) -> Result<Verified, ResourceError> {
        let now = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(now).unwrap_or_default());
        self.check_when(parts, now).await
    }

    async fn check_when(
        &self,
        parts: &Parts,
        now: std::time::SystemTime,
    ) -> Result<Verified, ResourceError> {
        let checked = self.check_unreported(parts, now).await;
        if let Err(error) = &checked {
            let token = crate::verifier::bearer_or_dpop(&parts.headers).ok();
            self.report(token.map(|(t, _)| t), error);
        }
        checked
    }

    async fn check_unreported(
        &self,
        parts: &Parts,
        at: std::time::SystemTime,
    ) -> Result<Verified, ResourceError> {
        let now = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        #[cfg(feature = "remote")]
        if let Some(remote) = &self.remote {
            remote.refresh_for_request(&parts.headers).await;
        }
        let verified =
            self.verifier
                .verify_request(parts.method.as_str(), &self.url, &parts.headers, now)?;
        // A token that approves tool calls is good for one call, by its
        // holder only: never as a bearer token.
        if verified.claims.cnf.is_none() && approves_tool_calls(&verified.claims) {
            return Err(ResourceError::InvalidToken(UNBOUND_APPROVAL));
        }
        #[cfg(feature = "remote")]
        if let Some(lists) = &self.status_lists {
            let status = verified.claims.status.as_ref();
            match lists.check_cached(status, at) {
                Some(verdict) => verdict?,
                None => lists.check(status, at).await?,
            }
        }
        #[cfg(feature = "remote")]
        if let Some(introspector) = &self.introspector {
            let (token, _) = crate::verifier::bearer_or_dpop(&parts.headers)?;
            match introspector.active(token).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ResourceError::InvalidToken(
                        "the access token has been revoked",
                    ));
                }
                Err(_) => return Err(ResourceError::Unavailable),
            }
        }
        Ok(verified)
    }
}

/// A refused request: its challenge, in this resource's words. Handlers
/// return it (`Result<_, Refusal>`); it renders as the 401/403 response.
pub struct Refusal {
    pub error: ResourceError,
    guard: Arc<Guard>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        self.guard.reject(&self.error)
    }
}

/// The verified caller of a request: subject, client, agent, owner,
/// scopes and the `act` chain, in `claims`; `kind` says whether it came
/// with an access token or an agent passport (only where the guard
/// accepts passports; a passport's scopes are the guard's
/// [`Guard::passport_scopes`] policy's, none by default).
#[derive(Clone)]
pub struct Caller {
    pub claims: AccessTokenClaims,
    pub kind: TokenKind,
    guard: Arc<Guard>,
    /// The token, kept only where refusals are reported.
    token: Option<Arc<str>>,
}

impl Caller {
    /// RFC 6750 §3.1: the route needs `scopes`; otherwise a 403
    /// `insufficient_scope` naming what to step up to.
    pub fn require(&self, scopes: &[&str]) -> Result<(), Refusal> {
        require_scopes(&self.claims, scopes).map_err(|error| self.refusal(error))
    }

    /// The refusal of this caller's request with `error`, reported when
    /// refusals are.
    fn refusal(&self, error: ResourceError) -> Refusal {
        self.guard.report(self.token.as_deref(), &error);
        Refusal {
            error,
            guard: self.guard.clone(),
        }
    }

    fn new(verified: Verified, guard: Arc<Guard>, parts: &Parts) -> Self {
        let token = guard
            .reports()
            .then(|| crate::verifier::bearer_or_dpop(&parts.headers).ok())
            .flatten()
            .map(|(t, _)| Arc::from(t));
        Self {
            claims: verified.claims,
            kind: verified.kind,
            guard,
            token,
        }
    }

    /// The agent acting, if any: the innermost `act`, else `agent_id`.
    pub fn agent(&self) -> Option<&str> {
        self.claims
            .act
            .as_ref()
            .map(|a| a.sub.as_str())
            .or(self.claims.agent_id.as_deref())
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Guard>: FromRef<S>,
{
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A `protect` layer in front already verified this request.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let guard = Arc::<Guard>::from_ref(state);
        match guard.check(parts).await {
            // Without `protect` in front nothing compares the request with
            // what the token approves, nor spends it: refused.
            Ok(v) if approves_tool_calls(&v.claims) => {
                let caller = Caller::new(v, guard.clone(), parts);
                Err(caller.refusal(ResourceError::OutsideApproval(OTHER_METHOD)))
            }
            Ok(v) => Ok(Caller::new(v, guard, parts)),
            Err(error) => Err(Refusal { error, guard }),
        }
    }
}

/// Middleware (`axum::middleware::from_fn_with_state(guard, protect)`)
/// for routes whose handlers are not axum extractors (an rmcp service):
/// verifies the request, puts the [`Caller`] in its extensions, and reads
/// a POSTed MCP JSON-RPC body (one message or a batch):
///
/// - a `tools/call` of a tool listed in [`Guard::tool_scopes`] is refused
///   with 403 `insufficient_scope` unless the token has that tool's scopes
///   (MCP authorization, scope challenge handling), so that the client
///   steps up instead of failing the call;
/// - a `tools/call` of a tool in [`Guard::approval_tools`] with an ordinary
///   token is answered with the JSON-RPC error [`APPROVAL_REQUIRED`], which
///   names the approval to ask for; in a batch, with a JSON-RPC
///   `-32600` error (HTTP 400): such a call must be sent alone;
/// - a token that approves tool calls (RFC 9396 `mcp_tool_call` entries,
///   see [`crate::details`]) is an *approval token*, good for one call:
///   it must be DPoP-bound (else 401 `invalid_token`); `initialize`,
///   `ping`, `notifications/*` and `tools/list` pass without spending it;
///   a `tools/call` passes only if one of its entries covers it at this
///   resource ([`crate::details::ToolCall::covers`]) and it was not spent
///   before ([`Guard::spent_tokens`]; a second use is 401 `invalid_token`,
///   a store that cannot answer 503 with `Retry-After`); any other call or
///   method, or another HTTP method than POST, is 403 `insufficient_scope`
///   with a description ([`ResourceError::OutsideApproval`]); a batch
///   that holds a `tools/call` is 400 (one call, one request). A covered
///   call does not need the tool's [`Guard::tool_scopes`]: its owner
///   approved this very call.
///
/// Why 403 `insufficient_scope` and not [`APPROVAL_REQUIRED`] for an
/// approval token that does not cover the call: the token is valid but
/// does not grant the request, which is RFC 6750 §3.1's case, and it is a
/// fault of the client (it presented the approval for one call with
/// another); answering it with the approval to ask for would invite a
/// client to loop asking its owner. The token is not spent, so the client
/// can still make the call it was approved for, and its ordinary token
/// gets the [`APPROVAL_REQUIRED`] error for this one.
pub async fn protect(
    axum::extract::State(guard): axum::extract::State<Arc<Guard>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let verified = match guard.check(&parts).await {
        Ok(v) => v,
        Err(error) => return guard.reject(&error),
    };
    // An approval token even when none of its `mcp_tool_call` entries is
    // well formed: it then covers no call, and is no ordinary token.
    let approval = approves_tool_calls(&verified.claims);
    let approvals = crate::details::tool_calls(verified.claims.authorization_details.as_deref());
    let caller = Caller::new(verified, guard.clone(), &parts);
    let reads_body = approval || !guard.tool_scopes.is_empty() || !guard.approval_tools.is_empty();
    let body = if !reads_body || parts.method != http::Method::POST {
        if approval {
            return caller
                .refusal(ResourceError::OutsideApproval(OTHER_METHOD))
                .into_response();
        }
        body
    } else {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_MCP_BODY).await else {
            return (
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            )
                .into_response();
        };
        let messages = rpc_messages(&bytes);
        let verdict = if approval {
            approved(&guard, &caller, &approvals, messages.as_ref()).await
        } else {
            ordinary(&guard, &caller, messages.as_ref())
        };
        if let Err(response) = verdict {
            return *response;
        }
        axum::body::Body::from(bytes)
    };
    parts.extensions.insert(caller);
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// The JSON-RPC error code of a `tools/call` that needs its owner's
/// approval, answered to a token that does not carry it (HTTP 200,
/// `Content-Type: application/json`, the request's `id`). Outside
/// JSON-RPC 2.0's reserved range (-32768 to -32000), so that it means
/// nothing else; the 403 in it echoes HTTP's Forbidden. Its `data`:
///
/// ```json
/// {
///   "authorization_details": [{"type": "mcp_tool_call",
///     "locations": ["https://mcp.example.com/mcp"],
///     "tool": "delete_note", "arguments": {"id": "n2"}}],
///   "authorization_servers": ["https://auth.example.com"],
///   "resource": "https://mcp.example.com/mcp",
///   "dpop_required": true
/// }
/// ```
///
/// The client asks one of the authorization servers for a token with
/// exactly these `authorization_details` (RFC 9396; by a CIBA request,
/// which its owner approves on their device), DPoP-bound, and repeats the
/// call with it, once.
///
/// Why a JSON-RPC error of its own and not MCP's URL elicitation
/// (`URLElicitationRequiredError`, -32042, MCP 2025-11-25): URL elicitation
/// asks the *user* to open a URL and finish something out of band, after
/// which the client retries with the same credentials. Here no page is
/// for the user to open at this server, and retrying with the same token
/// cannot succeed: the *client* must make a request to the authorization
/// server (backchannel authentication with the exact details), receive a
/// new token, and present it; the owner approves at the authorization
/// server, which is the only party that can issue the token. URL
/// elicitation serves what the MCP server needs from the user or from a
/// third party, the client's token unchanged (SEP-1036); the client's own
/// access to this server is MCP authorization's business, and that is
/// what changes here. And not an HTTP 403 challenge: RFC 6750 has no
/// parameter for `authorization_details`, and an MCP client reads a 403
/// as a scope step-up.
pub const APPROVAL_REQUIRED: i64 = -31403;

/// JSON-RPC 2.0 "Invalid Request", for a batch that holds a call that
/// must go alone.
pub const INVALID_REQUEST: i64 = -32600;

/// JSON-RPC 2.0 "Invalid params", for a call of an approval tool whose
/// `arguments` are not an object.
pub const INVALID_PARAMS: i64 = -32602;

const UNBOUND_APPROVAL: &str =
    "a token that approves tool calls must be DPoP-bound (cnf.jkt) and used with its DPoP proof";
const OTHER_METHOD: &str = "a token that approves tool calls is good only for those calls (and initialize, ping, notifications and tools/list)";
const NOT_COVERED: &str =
    "the token approves other tool calls than this one (tool, arguments and resource must match)";
const ALREADY_USED: &str = "the approval token was already used";

/// Whether a token carries approvals of MCP tool calls.
fn approves_tool_calls(claims: &AccessTokenClaims) -> bool {
    claims.authorization_details.as_deref().is_some_and(|d| {
        d.iter()
            .any(|e| e.get("type").and_then(|t| t.as_str()) == Some(crate::details::MCP_TOOL_CALL))
    })
}

/// A JSON-RPC error response (HTTP `status`, JSON body).
fn rpc_error(
    status: http::StatusCode,
    id: serde_json::Value,
    code: i64,
    message: &str,
    data: Option<serde_json::Value>,
) -> Box<Response> {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(data) = data {
        error["data"] = data;
    }
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error});
    Box::new(
        (
            status,
            [(http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}

/// JSON-RPC "Invalid Request" (HTTP 400) for a batch holding a call that
/// must go alone (one call, one request, one spend).
fn not_in_batch(why: &str) -> Box<Response> {
    rpc_error(
        http::StatusCode::BAD_REQUEST,
        serde_json::Value::Null,
        INVALID_REQUEST,
        why,
        None,
    )
}

/// The checks of an ordinary token's request: tool scopes, then calls of
/// approval tools.
fn ordinary(
    guard: &Guard,
    caller: &Caller,
    messages: Option<&Messages>,
) -> Result<(), Box<Response>> {
    let Some(messages) = messages else {
        // Not JSON-RPC: the MCP service answers it.
        return Ok(());
    };
    for message in &messages.list {
        if let Some(scopes) = message.tool().and_then(|t| guard.tool_scopes.get(t)) {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            caller
                .require(&scopes)
                .map_err(|r| Box::new(r.into_response()))?;
        }
    }
    let mut needing = messages.list.iter().filter(|m| {
        m.tool()
            .is_some_and(|tool| guard.approval_tools.contains(tool))
    });
    let Some(call) = needing.next() else {
        return Ok(());
    };
    if messages.batch {
        return Err(not_in_batch(
            "a call of a tool that needs its owner's approval must be sent alone, not in a batch",
        ));
    }
    let (Some(tool), Some(arguments)) = (call.tool(), call.arguments()) else {
        return Err(rpc_error(
            http::StatusCode::OK,
            call.id.clone(),
            INVALID_PARAMS,
            "the arguments of a tool call must be an object",
            None,
        ));
    };
    Err(rpc_error(
        http::StatusCode::OK,
        call.id.clone(),
        APPROVAL_REQUIRED,
        &format!(
            "calling {tool} needs its owner's approval of this exact call: ask an authorization \
             server in `authorization_servers` for a DPoP-bound token with these \
             `authorization_details` (the owner approves it), then make the call again with it"
        ),
        Some(serde_json::json!({
            "authorization_details": [crate::details::ToolCall::entry(&guard.url, tool, arguments)],
            "authorization_servers": guard.authorization_servers,
            "resource": guard.url,
            "dpop_required": true,
        })),
    ))
}

/// The checks of an approval token's request (see [`protect`]): passes
/// the methods that do not act, spends the token for the one call it
/// covers, refuses anything else.
async fn approved(
    guard: &Guard,
    caller: &Caller,
    approvals: &[crate::details::ToolCall],
    messages: Option<&Messages>,
) -> Result<(), Box<Response>> {
    let refuse = |why| {
        Err(Box::new(
            caller
                .refusal(ResourceError::OutsideApproval(why))
                .into_response(),
        ))
    };
    let Some(messages) = messages else {
        return refuse(OTHER_METHOD);
    };
    let mut call = None;
    for message in &messages.list {
        match message.method.as_deref() {
            Some("initialize" | "ping" | "tools/list") => {}
            Some(m) if m.starts_with("notifications/") => {}
            Some("tools/call") if messages.batch => {
                return Err(not_in_batch(
                    "an approved tool call must be sent alone, not in a batch",
                ));
            }
            Some("tools/call") => call = Some(message),
            _ => return refuse(OTHER_METHOD),
        }
    }
    let Some(call) = call else {
        return Ok(());
    };
    let covered = match (call.tool(), call.arguments()) {
        (Some(tool), Some(arguments)) => approvals
            .iter()
            .any(|a| a.covers(&guard.url, tool, arguments)),
        _ => false,
    };
    if !covered {
        return refuse(NOT_COVERED);
    }
    // Kept while the verifier could still accept the token.
    let until = caller.claims.exp.saturating_add(guard.verifier.leeway);
    match guard.spent.spend(&caller.claims.jti, until).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Box::new(
            caller
                .refusal(ResourceError::InvalidToken(ALREADY_USED))
                .into_response(),
        )),
        Err(_) => Err(Box::new(guard.reject(&ResourceError::Unavailable))),
    }
}

/// Largest MCP request body [`protect`] reads to find tool calls.
const MAX_MCP_BODY: usize = 4 << 20;

/// The JSON-RPC messages of a body: one, or a batch.
struct Messages {
    list: Vec<Message>,
    batch: bool,
}

/// One JSON-RPC message, as far as the guard reads it.
struct Message {
    /// `id` (`null` when absent).
    id: serde_json::Value,
    method: Option<String>,
    params: Option<serde_json::Value>,
}

impl Message {
    /// The tool a `tools/call` names.
    fn tool(&self) -> Option<&str> {
        if self.method.as_deref() != Some("tools/call") {
            return None;
        }
        self.params.as_ref()?.get("name")?.as_str()
    }

    /// A `tools/call`'s arguments (`null` when absent), when they are an
    /// object or absent.
    fn arguments(&self) -> Option<&serde_json::Value> {
        const NONE: &serde_json::Value = &serde_json::Value::Null;
        match self.params.as_ref().and_then(|p| p.get("arguments")) {
            None => Some(NONE),
            Some(a @ (serde_json::Value::Object(_) | serde_json::Value::Null)) => Some(a),
            Some(_) => None,
        }
    }
}

/// The JSON-RPC messages of a body (an object, or an array of them; an
/// element that is not an object is a message with no method); `None`
/// when the body is neither. Read as a `serde_json::Value`, where a
/// repeated key keeps its last value, as in the MCP service's own reading
/// (or the service refuses the message).
fn rpc_messages(body: &[u8]) -> Option<Messages> {
    let message = |value: serde_json::Value| {
        let serde_json::Value::Object(mut object) = value else {
            return Message {
                id: serde_json::Value::Null,
                method: None,
                params: None,
            };
        };
        Message {
            id: object.remove("id").unwrap_or_default(),
            method: object
                .remove("method")
                .and_then(|m| m.as_str().map(str::to_string)),
            params: object.remove("params"),
        }
    };
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::Array(batch) => Some(Messages {
            list: batch.into_iter().map(message).collect(),
            batch: true,
        }),
        one @ serde_json::Value::Object(_) => Some(Messages {
            list: vec![message(one)],
            batch: false,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::jwt::{StaticKeys, VerifyingKey};

    async fn whoami(caller: Caller) -> Result<String, Refusal> {
        caller.require(&["tools:read"])?;
        Ok(format!("{} {:?}", caller.claims.sub, caller.agent()))
    }

    async fn admin(caller: Caller) -> Result<String, Refusal> {
        caller.require(&["tools:admin"])?;
        Ok("ok".into())
    }

    #[tokio::test]
    async fn handlers_get_the_caller_or_a_challenge() {
        let (signing, keys) = es256();
        let mut metadata = ProtectedResourceMetadata::new(
            "https://mcp.example.com/mcp",
            "https://auth.example.com",
        );
        metadata.scopes_supported = vec!["tools:read".into(), "tools:admin".into()];
        let guard = Arc::new(Guard::new(&metadata, Arc::new(keys)));
        let app = axum::Router::new()
            .route("/mcp", axum::routing::post(whoami))
            .route("/admin", axum::routing::post(admin))
            .merge(metadata.router())
            .with_state(guard);

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = sign(
            &signing,
            "at+jwt",
            json!({"iss": "https://auth.example.com", "sub": "alice", "aud": "https://mcp.example.com/mcp",
                    "client_id": "c", "jti": "j", "iat": now, "exp": now + 300, "scope": "tools:read",
                    "act": {"sub": "agent-1", "agent_id": "agent-1"}}),
        );
        let call = |path: &str, token: Option<&str>| {
            let mut req = http::Request::post(path);
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            app.clone()
                .oneshot(req.body(axum::body::Body::empty()).unwrap())
        };

        let r = call("/mcp", Some(&token)).await.unwrap();
        assert_eq!(r.status(), 200);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        assert_eq!(&body[..], b"alice Some(\"agent-1\")");

        let r = call("/mcp", None).await.unwrap();
        assert_eq!(r.status(), 401);
        let challenge = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>();
        assert!(
            challenge.iter().any(|c| {
                c.contains(
            "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        )
            }),
            "{challenge:?}"
        );

        let r = call("/admin", Some(&token)).await.unwrap();
        assert_eq!(r.status(), 403);
        let challenge = r
            .headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.contains("insufficient_scope")
                && challenge.contains("scope=\"tools:read tools:admin\""),
            "{challenge}"
        );

        let r = call("/mcp", Some("not-a-jwt")).await.unwrap();
        assert_eq!(r.status(), 401);

        let r = app
            .clone()
            .oneshot(
                http::Request::get("/.well-known/oauth-protected-resource/mcp")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    fn es256() -> (EncodingKey, StaticKeys) {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = aws_lc_rs::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec();
        let mut keys = StaticKeys::default();
        keys.insert(
            "k1",
            VerifyingKey {
                alg: Algorithm::ES256,
                key: DecodingKey::from_ec_der(&public),
            },
        );
        (EncodingKey::from_ec_der(pkcs8.as_ref()), keys)
    }

    fn sign(key: &EncodingKey, typ: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        header.typ = Some(typ.into());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    /// `protect` in front of a service that is not an extractor (an MCP
    /// endpoint): the caller lands in the request's extensions, and a
    /// `tools/call` of a tool that needs more scope is a 403 step-up
    /// before the service sees it; other methods and tools pass.
    #[tokio::test]
    async fn protect_puts_the_caller_in_extensions_and_guards_tools() {
        let (signing, keys) = es256();
        let mut metadata = ProtectedResourceMetadata::new(
            "https://mcp.example.com/mcp",
            "https://auth.example.com",
        );
        metadata.scopes_supported = vec!["mcp".into(), "mcp:admin".into()];
        let mut guard = Guard::new(&metadata, Arc::new(keys));
        guard
            .tool_scopes
            .insert("admin_echo".into(), vec!["mcp:admin".into()]);
        let guard = Arc::new(guard);
        let service = |request: axum::extract::Request| async move {
            let caller = request.extensions().get::<Caller>().cloned();
            caller.map_or("none".to_string(), |c| c.claims.sub)
        };
        let app = axum::Router::new()
            .route("/mcp", axum::routing::post(service))
            .layer(axum::middleware::from_fn_with_state(guard.clone(), protect));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = sign(
            &signing,
            "at+jwt",
            json!({"iss": "https://auth.example.com", "sub": "alice", "aud": "https://mcp.example.com/mcp",
                   "client_id": "c", "jti": "j", "iat": now, "exp": now + 300, "scope": "mcp"}),
        );
        let call = |body: &str, token: &str| {
            app.clone().oneshot(
                http::Request::post("/mcp")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body.to_string()))
                    .unwrap(),
            )
        };
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let whoami = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami"}}"#;
        let admin = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"admin_echo","arguments":{"text":"x"}}}"#;
        for body in [list, whoami, "not json"] {
            let r = call(body, &token).await.unwrap();
            assert_eq!(r.status(), 200, "{body}");
            let text = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            assert_eq!(&text[..], b"alice");
        }
        for body in [admin.to_string(), format!("[{list},{admin}]")] {
            let r = call(&body, &token).await.unwrap();
            assert_eq!(r.status(), 403, "{body}");
            let challenge = r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(
                challenge.contains(r#"error="insufficient_scope""#)
                    && challenge.contains(r#"scope="mcp mcp:admin""#),
                "{challenge}"
            );
        }
        let r = call(list, "garbage").await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("resource_metadata=")
        );
    }

    fn unix_now() -> i64 {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    }

    const RESOURCE: &str = "https://mcp.example.com/mcp";

    /// A passport of agent-x (owner u1, scope `mcp` at the issuer), bound
    /// to `key`, naming `aud` (`Value::Null`: no `aud` at all).
    fn passport(signing: &EncodingKey, key: &ProofKey, aud: serde_json::Value) -> String {
        let now = unix_now();
        let mut claims = json!({"iss": "https://auth.example.com", "sub": "agent-x", "owner": "u1",
               "agent_name": "builder", "scope": "mcp", "cnf": {"jkt": key.jkt()},
               "jti": format!("p-{aud}"), "iat": now, "exp": now + 300, "agent_id": "agent-x"});
        if !aud.is_null() {
            claims["aud"] = aud;
        }
        sign(signing, "agent-passport+jwt", claims)
    }

    /// `Authorization: <scheme> <token>` and a fresh DPoP proof by `key`
    /// for POST to the resource.
    fn passport_request(scheme: &str, token: &str, key: &ProofKey) -> http::request::Parts {
        http::Request::post(RESOURCE)
            .header("authorization", format!("{scheme} {token}"))
            .header("dpop", key.proof("POST", RESOURCE, Some(token), unix_now()))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn refusal(guard: &Guard, error: &ResourceError) -> (u16, Vec<String>) {
        let r = guard.reject(error);
        let challenges = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        (r.status().as_u16(), challenges)
    }

    fn guard(keys: StaticKeys) -> Guard {
        let mut metadata = ProtectedResourceMetadata::new(RESOURCE, "https://auth.example.com");
        metadata.scopes_supported = vec!["mcp".into()];
        Guard::new(&metadata, Arc::new(keys))
    }

    /// SECURITY.md, "Passport used as an access token": by default a
    /// passport is refused whatever it names and however it is presented
    /// (with its DPoP proof, or as a bearer token), with an RFC 6750
    /// `invalid_token` challenge.
    #[tokio::test]
    async fn passports_are_refused_unless_the_resource_accepts_them() {
        let (signing, keys) = es256();
        let guard = guard(keys);
        assert!(!guard.verifier.accepts_passports());
        let key = ProofKey::new();
        for aud in [json!(RESOURCE), json!([RESOURCE]), serde_json::Value::Null] {
            let token = passport(&signing, &key, aud.clone());
            for scheme in ["DPoP", "Bearer"] {
                let err = guard
                    .check(&passport_request(scheme, &token, &key))
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("accepted {aud} with {scheme}"));
                assert_eq!(err, crate::verifier::PASSPORTS_REFUSED, "{aud}");
                let (status, challenges) = refusal(&guard, &err);
                assert_eq!(status, 401);
                assert!(
                    challenges[0].starts_with(r#"Bearer error="invalid_token""#),
                    "{challenges:?}"
                );
                assert!(
                    challenges[1].starts_with(r#"DPoP error="invalid_token""#),
                    "{challenges:?}"
                );
            }
        }
    }

    /// Opted in, a passport must name this resource in `aud` (another
    /// site, or none, is refused), is DPoP-bound as ever, and reaches the
    /// handler as the agent with no scope: its own `scope` claim is not a
    /// grant here, so a route that needs `mcp` answers 403.
    #[tokio::test]
    async fn accepted_passports_name_this_resource_and_carry_no_scope() {
        let (signing, keys) = es256();
        let guard = Arc::new(guard(keys).accept_passports(true));
        let key = ProofKey::new();
        for (aud, why) in [
            (
                json!("https://other.example.com/"),
                "the passport is for another site",
            ),
            (
                json!(["https://other.example.com/", "https://mcp.example.com/mcp/"]),
                "the passport is for another site",
            ),
            (
                serde_json::Value::Null,
                "the passport names no site; ask for one whose audience is this resource",
            ),
        ] {
            let token = passport(&signing, &key, aud.clone());
            let err = guard
                .check(&passport_request("DPoP", &token, &key))
                .await
                .err()
                .unwrap_or_else(|| panic!("accepted {aud}"));
            assert_eq!(err, ResourceError::InvalidToken(why), "{aud}");
            assert_eq!(refusal(&guard, &err).0, 401);
        }

        let token = passport(&signing, &key, json!(RESOURCE));
        // The key binding still holds: another key's proof, or none.
        let other = ProofKey::new();
        let err = guard
            .check(&passport_request("DPoP", &token, &other))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ResourceError::InvalidDpopProof("the proof key is not the key the token is bound to")
        );
        let err = guard
            .check(&passport_request("Bearer", &token, &key))
            .await
            .unwrap_err();
        assert!(matches!(err, ResourceError::InvalidToken(_)), "{err:?}");

        let v = guard
            .check(&passport_request("DPoP", &token, &key))
            .await
            .unwrap();
        assert_eq!(v.kind, TokenKind::Passport);
        assert_eq!(v.claims.agent_id.as_deref(), Some("agent-x"));
        assert_eq!(v.claims.owner.as_deref(), Some("u1"));
        assert_eq!(v.claims.extra["agent_name"], "builder");
        assert_eq!(v.claims.cnf.as_ref().unwrap().jkt, key.jkt());
        assert_eq!(v.claims.scope, None);
        let caller = Caller {
            claims: v.claims,
            kind: v.kind,
            guard: guard.clone(),
            token: None,
        };
        let r = caller.require(&["mcp"]).err().unwrap().into_response();
        assert_eq!(r.status(), 403);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains(r#"error="insufficient_scope""#)
        );
    }

    /// The resource's own policy maps an identity to scopes: the agents
    /// of owner u1 may use `mcp` here, anyone else nothing.
    #[tokio::test]
    async fn passport_scopes_come_from_the_resources_policy() {
        let (signing, keys) = es256();
        let guard =
            guard(keys)
                .accept_passports(true)
                .passport_scopes(|p| match p.owner.as_str() {
                    "u1" => vec!["mcp".to_string()],
                    _ => Vec::new(),
                });
        let key = ProofKey::new();
        let token = passport(&signing, &key, json!(RESOURCE));
        let v = guard
            .check(&passport_request("DPoP", &token, &key))
            .await
            .unwrap();
        assert_eq!(v.claims.scope.as_deref(), Some("mcp"));

        let now = unix_now();
        let stranger = sign(
            &signing,
            "agent-passport+jwt",
            json!({"iss": "https://auth.example.com", "sub": "agent-y", "owner": "u2", "aud": RESOURCE,
                   "agent_name": "other", "scope": "mcp", "cnf": {"jkt": key.jkt()},
                   "jti": "p-y", "iat": now, "exp": now + 300, "agent_id": "agent-y"}),
        );
        let v = guard
            .check(&passport_request("DPoP", &stranger, &key))
            .await
            .unwrap();
        assert_eq!(v.claims.scope, None);
    }

    /// Introspection mode: the authorization server answers a passport
    /// that names this resource as active (RFC 7662, `token_type` the
    /// passport's), and the kit still refuses it unless it accepts
    /// passports, and then only for this resource and with no scope.
    #[cfg(feature = "remote")]
    #[tokio::test]
    async fn introspection_mode_refuses_passports_the_same_way() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/introspect", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/introspect",
            axum::routing::post(|| async {
                json!({"active": true, "token_type": "urn:agentauth:params:token-type:passport",
                       "scope": "mcp", "agent_id": "agent-x"})
                .to_string()
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let introspector =
            || crate::introspection::Introspector::new(endpoint.clone(), "rs", "secret").unwrap();
        let (signing, keys) = es256();
        let key = ProofKey::new();
        let here = passport(&signing, &key, json!(RESOURCE));

        let refusing = guard(keys.clone()).with_introspection(introspector());
        let err = refusing
            .check(&passport_request("DPoP", &here, &key))
            .await
            .unwrap_err();
        assert_eq!(err, crate::verifier::PASSPORTS_REFUSED);

        let accepting = guard(keys)
            .accept_passports(true)
            .with_introspection(introspector());
        let v = accepting
            .check(&passport_request("DPoP", &here, &key))
            .await
            .unwrap();
        assert_eq!(v.kind, TokenKind::Passport);
        assert_eq!(v.claims.scope, None);
        for aud in [json!("https://other.example.com/"), serde_json::Value::Null] {
            let token = passport(&signing, &key, aud.clone());
            let err = accepting
                .check(&passport_request("DPoP", &token, &key))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ResourceError::InvalidToken(_)),
                "{aud}: {err:?}"
            );
        }
    }

    /// Status checking on: an access token and a passport whose status
    /// bit is set are refused (401 `invalid_token`), their valid siblings
    /// pass; off (the default), the revoked token passes; and a list that
    /// cannot be had is a 503 with `Retry-After`.
    #[cfg(feature = "remote")]
    #[tokio::test]
    async fn status_checking_refuses_revoked_tokens_and_passports() {
        use crate::status_cache::StatusListPolicy;
        use crate::status_cache::testing::{T0, TestIssuer};

        let issuer = TestIssuer::start().await;
        issuer.revoke(2);
        let mut metadata = ProtectedResourceMetadata::new(RESOURCE, &issuer.url);
        metadata.scopes_supported = vec!["mcp".into()];
        let plain = Guard::new(&metadata, Arc::new(issuer.keys())).accept_passports(true);
        let checking = Guard::new(&metadata, Arc::new(issuer.keys()))
            .accept_passports(true)
            .check_status(StatusListPolicy::default())
            .unwrap();
        assert!(plain.status_lists().is_none());
        let status = |idx: u64| serde_json::to_value(issuer.claim(idx)).unwrap();
        let access = |idx: u64| {
            issuer.key.sign(
                "at+jwt",
                &json!({"iss": issuer.url, "sub": "alice", "aud": RESOURCE, "client_id": "c",
                        "jti": format!("a{idx}"), "iat": T0, "exp": T0 + 300, "scope": "mcp",
                        "status": status(idx)}),
            )
        };
        let key = ProofKey::new();
        let passport = |idx: u64| {
            issuer.key.sign(
                "agent-passport+jwt",
                &json!({"iss": issuer.url, "sub": "agent-x", "owner": "u1", "agent_name": "b",
                        "aud": RESOURCE, "cnf": {"jkt": key.jkt()}, "jti": format!("p{idx}"),
                        "iat": T0, "exp": T0 + 300, "agent_id": "agent-x", "status": status(idx)}),
            )
        };
        let bearer = |token: &str| {
            http::Request::post(RESOURCE)
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let dpop = |token: &str| {
            http::Request::post(RESOURCE)
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", key.proof("POST", RESOURCE, Some(token), T0 + 1))
                .body(())
                .unwrap()
                .into_parts()
                .0
        };

        assert!(checking.check_at(&bearer(&access(1)), T0 + 1).await.is_ok());
        assert!(checking.check_at(&dpop(&passport(1)), T0 + 1).await.is_ok());
        let revoked = ResourceError::InvalidToken("the token has been revoked");
        let err = checking
            .check_at(&bearer(&access(2)), T0 + 1)
            .await
            .unwrap_err();
        assert_eq!(err, revoked);
        let (status, challenges) = refusal(&checking, &err);
        assert_eq!(status, 401);
        assert!(
            challenges[0].starts_with(
                r#"Bearer error="invalid_token", error_description="the token has been revoked""#
            ),
            "{challenges:?}"
        );
        let err = checking
            .check_at(&dpop(&passport(2)), T0 + 1)
            .await
            .unwrap_err();
        assert_eq!(err, revoked);
        assert_eq!(issuer.fetches(), 1);
        assert!(plain.check_at(&bearer(&access(2)), T0 + 1).await.is_ok());

        // A guard that cannot have the list: 503 with Retry-After.
        issuer.set(|s| s.answer = Some(500));
        let cold = Guard::new(&metadata, Arc::new(issuer.keys()))
            .check_status(StatusListPolicy::default())
            .unwrap();
        let err = cold
            .check_at(&bearer(&access(1)), T0 + 1)
            .await
            .unwrap_err();
        assert_eq!(err, ResourceError::StatusListUnavailable { retry_after: 1 });
        let r = cold.reject(&err);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(r.headers().get("www-authenticate").is_none());
    }

    /// On the system clock, through `check`: once the issuer sets the bit,
    /// a token is refused within the list's 1 s ttl and one fetch.
    #[cfg(feature = "remote")]
    #[tokio::test]
    async fn a_revocation_reaches_the_guard_within_the_ttl() {
        use crate::status_cache::StatusListPolicy;
        use crate::status_cache::testing::TestIssuer;

        let issuer = TestIssuer::start().await;
        issuer.set(|s| s.exp = Some(unix_now() + 3600));
        let metadata = ProtectedResourceMetadata::new(RESOURCE, &issuer.url);
        let guard = Guard::new(&metadata, Arc::new(issuer.keys()))
            .check_status(StatusListPolicy::default())
            .unwrap();
        let now = unix_now();
        let token = issuer.key.sign(
            "at+jwt",
            &json!({"iss": issuer.url, "sub": "alice", "aud": RESOURCE, "client_id": "c",
                    "jti": "j", "iat": now, "exp": now + 300,
                    "status": serde_json::to_value(issuer.claim(9)).unwrap()}),
        );
        let request = http::Request::post(RESOURCE)
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(guard.check(&request).await.is_ok());
        issuer.revoke(9);
        let revoked_at = std::time::Instant::now();
        let deadline = std::time::Duration::from_secs(2);
        loop {
            match guard.check(&request).await {
                Ok(_) => assert!(
                    revoked_at.elapsed() < deadline,
                    "still accepted {:?} after the revocation",
                    revoked_at.elapsed()
                ),
                Err(e) => {
                    assert_eq!(e, ResourceError::InvalidToken("the token has been revoked"));
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A spent-token store that cannot answer (its database is down).
    struct DownStore;

    impl crate::once::SpentTokens for DownStore {
        fn spend<'a>(&'a self, _jti: &'a str, _exp: i64) -> crate::once::SpendFuture<'a> {
            Box::pin(async { Err(crate::once::SpendError::new("database unreachable")) })
        }
    }

    /// A store that records what it was asked to spend.
    #[derive(Default)]
    struct RecordingStore(std::sync::Mutex<Vec<(String, i64)>>);

    impl crate::once::SpentTokens for RecordingStore {
        fn spend<'a>(&'a self, jti: &'a str, exp: i64) -> crate::once::SpendFuture<'a> {
            self.0.lock().unwrap().push((jti.to_string(), exp));
            Box::pin(async { Ok(true) })
        }
    }

    /// An MCP endpoint behind `protect`, whose `delete_note` needs an
    /// approval per call, and a count of the requests it served.
    struct Approvals {
        app: axum::Router,
        signing: EncodingKey,
        key: ProofKey,
        served: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Approvals {
        fn new(store: Option<Arc<dyn crate::once::SpentTokens>>) -> Self {
            let (signing, keys) = es256();
            let mut metadata = ProtectedResourceMetadata::new(RESOURCE, "https://auth.example.com");
            metadata.scopes_supported = vec!["mcp".into()];
            let mut guard = Guard::new(&metadata, Arc::new(keys));
            if let Some(store) = store {
                guard = guard.spent_tokens(store);
            }
            guard
                .tool_scopes
                .insert("delete_note".into(), vec!["mcp".into()]);
            guard.approval_tools.insert("delete_note".into());
            let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let count = served.clone();
            let service = move |request: axum::extract::Request| {
                let count = count.clone();
                async move {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let caller = request.extensions().get::<Caller>().cloned();
                    caller.map_or("none".to_string(), |c| c.claims.sub)
                }
            };
            let app = axum::Router::new()
                .route(
                    "/mcp",
                    axum::routing::post(service).get(|| async { "stream" }),
                )
                .layer(axum::middleware::from_fn_with_state(
                    Arc::new(guard),
                    protect,
                ));
            Self {
                app,
                signing,
                key: ProofKey::new(),
                served,
            }
        }

        /// A token of alice's agent, bound to `self.key` unless `bound` is
        /// false, carrying `details` (none when `Null`).
        fn token(&self, jti: &str, details: serde_json::Value, bound: bool) -> String {
            let now = unix_now();
            let mut claims = json!({"iss": "https://auth.example.com", "sub": "alice", "aud": RESOURCE,
                   "client_id": "agent-1", "jti": jti, "iat": now, "exp": now + 300});
            if bound {
                claims["cnf"] = json!({"jkt": self.key.jkt()});
            }
            if details.is_null() {
                claims["scope"] = "mcp".into();
            } else {
                claims["authorization_details"] = details;
            }
            sign(&self.signing, "at+jwt", claims)
        }

        async fn send(
            &self,
            method: &str,
            token: &str,
            body: &str,
        ) -> http::Response<axum::body::Body> {
            let (scheme, proof) = if token.starts_with("bearer:") {
                ("Bearer", None)
            } else {
                (
                    "DPoP",
                    Some(self.key.proof(method, RESOURCE, Some(token), unix_now())),
                )
            };
            let token = token.trim_start_matches("bearer:");
            let mut request = http::Request::builder()
                .method(method)
                .uri("/mcp")
                .header("authorization", format!("{scheme} {token}"))
                .header("content-type", "application/json");
            if let Some(proof) = proof {
                request = request.header("dpop", proof);
            }
            self.app
                .clone()
                .oneshot(
                    request
                        .body(axum::body::Body::from(body.to_string()))
                        .unwrap(),
                )
                .await
                .unwrap()
        }

        async fn post(&self, token: &str, body: &str) -> http::Response<axum::body::Body> {
            self.send("POST", token, body).await
        }

        fn served(&self) -> usize {
            self.served.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn approval(tool: &str, arguments: serde_json::Value) -> serde_json::Value {
        json!([crate::details::ToolCall::entry(RESOURCE, tool, &arguments)])
    }

    fn delete(id: u64, note: &str) -> String {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "delete_note", "arguments": {"id": note}}})
        .to_string()
    }

    async fn challenge(r: http::Response<axum::body::Body>, status: u16) -> String {
        assert_eq!(r.status(), status);
        r.headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    async fn json_body(r: http::Response<axum::body::Body>) -> serde_json::Value {
        serde_json::from_slice(&axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap())
            .unwrap()
    }

    /// The approved call passes once (with no scope: the approval is the
    /// grant), then the same token is refused, 401 "already used"; the
    /// methods that do not act pass before it without spending it.
    #[tokio::test]
    async fn an_approved_call_passes_once() {
        let a = Approvals::new(None);
        let token = a.token("t1", approval("delete_note", json!({"id": "n2"})), true);
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
        for body in [
            init,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
            r#"[{"jsonrpc":"2.0","id":4,"method":"ping"},{"jsonrpc":"2.0","id":5,"method":"tools/list"}]"#,
        ] {
            let r = a.post(&token, body).await;
            assert_eq!(r.status(), 200, "{body}");
        }
        assert_eq!(a.served(), 5);
        let r = a.post(&token, &delete(6, "n2")).await;
        assert_eq!(r.status(), 200);
        let text = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        assert_eq!(&text[..], b"alice");
        assert_eq!(a.served(), 6);

        let c = challenge(a.post(&token, &delete(7, "n2")).await, 401).await;
        assert!(
            c.contains(
                r#"error="invalid_token", error_description="the approval token was already used""#
            ),
            "{c}"
        );
        assert_eq!(a.served(), 6);
        // Spent, it is still good for what does not act.
        assert_eq!(
            a.post(&token, r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#)
                .await
                .status(),
            200
        );
    }

    /// Other arguments, another tool, another resource, another method:
    /// 403 `insufficient_scope` with a description and no `scope` to step
    /// up to; the token is not spent by a refusal and still makes its call.
    #[tokio::test]
    async fn an_approval_token_is_good_only_for_its_call() {
        let a = Approvals::new(None);
        let token = a.token("t2", approval("delete_note", json!({"id": "n2"})), true);
        let elsewhere = a.token(
            "t3",
            json!([crate::details::ToolCall::entry(
                "https://other.example.com/mcp",
                "delete_note",
                &json!({"id": "n2"})
            )]),
            true,
        );
        for (token, body, why) in [
            (&token, delete(1, "n1"), NOT_COVERED),
            (&token, json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                            "params": {"name": "delete_note", "arguments": {"id": "n2", "force": true}}}).to_string(), NOT_COVERED),
            (&token, json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                            "params": {"name": "list_notes", "arguments": {"id": "n2"}}}).to_string(), NOT_COVERED),
            (&token, json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                            "params": {"name": "delete_note", "arguments": "n2"}}).to_string(), NOT_COVERED),
            (&elsewhere, delete(5, "n2"), NOT_COVERED),
            (&token, r#"{"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"note://n2"}}"#.to_string(), OTHER_METHOD),
            (&token, r#"{"jsonrpc":"2.0","id":7,"result":{}}"#.to_string(), OTHER_METHOD),
            (&token, "not json".to_string(), OTHER_METHOD),
        ] {
            let c = challenge(a.post(token, &body).await, 403).await;
            assert!(
                c.starts_with(&format!(r#"Bearer error="insufficient_scope", error_description="{why}""#)),
                "{body}: {c}"
            );
            assert!(!c.contains("scope=\""), "{c}");
        }
        // An entry of the type that is not well formed approves nothing,
        // and its token is no ordinary token either.
        let malformed = a.token(
            "t3b",
            json!([{"type": "mcp_tool_call", "tool": 7, "arguments": {"id": "n2"}}]),
            true,
        );
        let other =
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"list_notes"}}"#;
        for body in [delete(9, "n2"), other.to_string()] {
            let c = challenge(a.post(&malformed, &body).await, 403).await;
            assert!(c.contains(NOT_COVERED), "{c}");
        }
        // Another HTTP method (the SSE stream of a session).
        let c = challenge(a.send("GET", &token, "").await, 403).await;
        assert!(c.contains(OTHER_METHOD), "{c}");
        assert_eq!(a.served(), 0);
        assert_eq!(a.post(&token, &delete(8, "n2")).await.status(), 200);
        assert_eq!(a.served(), 1);
    }

    /// Without its DPoP binding an approval token is refused everywhere
    /// (401 `invalid_token`), even for what does not act; an entry of
    /// another type does not make a token an approval token.
    #[tokio::test]
    async fn an_approval_token_must_be_dpop_bound() {
        let a = Approvals::new(None);
        let bearer = a.token("t4", approval("delete_note", json!({"id": "n2"})), false);
        for body in [
            delete(1, "n2"),
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#.to_string(),
        ] {
            let c = challenge(a.post(&format!("bearer:{bearer}"), &body).await, 401).await;
            assert!(
                c.contains(r#"error="invalid_token""#) && c.contains("DPoP-bound"),
                "{c}"
            );
        }
        assert_eq!(a.served(), 0);
        let other_type = a.token(
            "t5",
            json!([{"type": "payment_initiation", "amount": 1}]),
            false,
        );
        let r = a
            .post(
                &format!("bearer:{other_type}"),
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
            )
            .await;
        assert_eq!(r.status(), 200);
    }

    /// A store that cannot answer: 503 with `Retry-After`, the call not
    /// made; the token is spent by `jti` until `exp` plus the leeway.
    #[tokio::test]
    async fn a_store_that_cannot_answer_is_a_503() {
        let a = Approvals::new(Some(Arc::new(DownStore)));
        let token = a.token("t6", approval("delete_note", json!({"id": "n2"})), true);
        let r = a.post(&token, &delete(1, "n2")).await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
        assert_eq!(a.served(), 0);

        let store = Arc::new(RecordingStore::default());
        let a = Approvals::new(Some(store.clone()));
        let token = a.token("t7", approval("delete_note", json!({"id": "n2"})), true);
        assert_eq!(a.post(&token, &delete(1, "n2")).await.status(), 200);
        let spent = store.0.lock().unwrap().clone();
        assert_eq!(spent.len(), 1);
        assert_eq!(spent[0].0, "t7");
        let exp = unix_now() + 300;
        assert!((exp + 30 - spent[0].1).abs() <= 2, "{spent:?}");
    }

    /// An ordinary token calling an approval tool gets the JSON-RPC error
    /// that names the approval to ask for, under the request's id; other
    /// tools pass as before.
    #[tokio::test]
    async fn an_ordinary_token_is_told_which_approval_to_ask_for() {
        let a = Approvals::new(None);
        let token = a.token("t8", serde_json::Value::Null, true);
        let r = a.post(&token, &delete(41, "n2")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        let answer = json_body(r).await;
        assert_eq!(answer["jsonrpc"], "2.0");
        assert_eq!(answer["id"], 41);
        assert_eq!(answer["error"]["code"], APPROVAL_REQUIRED);
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("delete_note")
        );
        assert_eq!(
            answer["error"]["data"],
            json!({
                "authorization_details": [{"type": "mcp_tool_call", "locations": [RESOURCE],
                                           "tool": "delete_note", "arguments": {"id": "n2"}}],
                "authorization_servers": ["https://auth.example.com"],
                "resource": RESOURCE,
                "dpop_required": true,
            })
        );
        // What it names is exactly what covers the call.
        let entry = &answer["error"]["data"]["authorization_details"][0];
        assert!(crate::details::ToolCall::from_entry(entry).unwrap().covers(
            RESOURCE,
            "delete_note",
            &json!({"id": "n2"})
        ));
        // A string id is echoed as it came; no arguments: `{}`.
        let r = a
            .post(&token, r#"{"jsonrpc":"2.0","id":"x-1","method":"tools/call","params":{"name":"delete_note"}}"#)
            .await;
        let answer = json_body(r).await;
        assert_eq!(answer["id"], "x-1");
        assert_eq!(
            answer["error"]["data"]["authorization_details"][0]["arguments"],
            json!({})
        );
        assert_eq!(a.served(), 0);
        let r = a
            .post(
                &token,
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_notes"}}"#,
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(a.served(), 1);
        // Without the tool's scope, the step-up comes first.
        let now = unix_now();
        let scopeless = sign(
            &a.signing,
            "at+jwt",
            json!({"iss": "https://auth.example.com", "sub": "alice", "aud": RESOURCE,
                   "client_id": "c", "jti": "t9", "iat": now, "exp": now + 300}),
        );
        let c = challenge(
            a.post(&format!("bearer:{scopeless}"), &delete(4, "n2"))
                .await,
            403,
        )
        .await;
        assert!(c.contains(r#"scope="mcp""#), "{c}");
    }

    /// A batch cannot carry a second call under one approval token, nor
    /// an approval tool's call past the check of an ordinary token: 400
    /// with JSON-RPC "Invalid Request", nothing served, nothing spent.
    #[tokio::test]
    async fn batches_cannot_smuggle_calls() {
        let a = Approvals::new(None);
        let token = a.token("t10", approval("delete_note", json!({"id": "n2"})), true);
        let list = r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#;
        let other =
            r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"list_notes"}}"#;
        let ordinary = a.token("t11", serde_json::Value::Null, true);
        for (token, body) in [
            (&token, format!("[{},{}]", delete(1, "n2"), delete(2, "n2"))),
            (&token, format!("[{},{}]", delete(1, "n2"), delete(2, "n3"))),
            (&token, format!("[{list},{}]", delete(3, "n2"))),
            (&token, format!("[{other}]")),
            (&ordinary, format!("[{list},{}]", delete(4, "n2"))),
            (&ordinary, format!("[{other},{}]", delete(5, "n2"))),
        ] {
            let r = a.post(token, &body).await;
            assert_eq!(r.status(), 400, "{body}");
            let answer = json_body(r).await;
            assert_eq!(answer["error"]["code"], INVALID_REQUEST, "{body}");
            assert_eq!(answer["id"], serde_json::Value::Null);
        }
        assert_eq!(a.served(), 0);
        // Unspent: the call alone still passes, once.
        assert_eq!(a.post(&token, &delete(6, "n2")).await.status(), 200);
        assert_eq!(a.post(&token, &delete(7, "n2")).await.status(), 401);
    }

    /// Without `protect` in front, an approval token at an extractor route
    /// is refused: nothing there compares the call or spends the token.
    #[tokio::test]
    async fn extractor_routes_refuse_approval_tokens() {
        let (signing, keys) = es256();
        let guard = Arc::new(guard(keys));
        let app = axum::Router::new()
            .route(
                "/mcp",
                axum::routing::post(|c: Caller| async move { c.claims.sub }),
            )
            .with_state(guard);
        let key = ProofKey::new();
        let now = unix_now();
        let token = sign(
            &signing,
            "at+jwt",
            json!({"iss": "https://auth.example.com", "sub": "alice", "aud": RESOURCE,
                   "client_id": "c", "jti": "t12", "iat": now, "exp": now + 300, "scope": "mcp",
                   "cnf": {"jkt": key.jkt()}, "authorization_details": approval("delete_note", json!({}))}),
        );
        let r = app
            .oneshot(
                http::Request::post("/mcp")
                    .header("authorization", format!("DPoP {token}"))
                    .header("dpop", key.proof("POST", RESOURCE, Some(&token), now))
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let c = challenge(r, 403).await;
        assert!(c.contains(OTHER_METHOD), "{c}");
    }

    struct ProofKey {
        pair: EcdsaKeyPair,
        jwk: serde_json::Value,
    }

    impl ProofKey {
        fn new() -> Self {
            use base64::Engine as _;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
            let public = aws_lc_rs::signature::KeyPair::public_key(&pair)
                .as_ref()
                .to_vec();
            let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..65])});
            Self { pair, jwk }
        }

        fn jkt(&self) -> String {
            crate::jwk::thumbprint(&serde_json::from_value(self.jwk.clone()).unwrap()).unwrap()
        }

        fn proof(&self, htm: &str, htu: &str, token: Option<&str>, iat: i64) -> String {
            use base64::Engine as _;
            let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
            let mut jti = [0u8; 16];
            aws_lc_rs::rand::SecureRandom::fill(&SystemRandom::new(), &mut jti).unwrap();
            let mut claims = json!({"jti": b64(&jti),
                                    "htm": htm, "htu": htu, "iat": iat});
            if let Some(t) = token {
                claims["ath"] = crate::dpop::ath(t).into();
            }
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = self
                .pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap();
            format!("{input}.{}", b64(sig.as_ref()))
        }
    }
}
