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
        require_scopes(&self.claims, scopes).map_err(|error| {
            self.guard.report(self.token.as_deref(), &error);
            Refusal {
                error,
                guard: self.guard.clone(),
            }
        })
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
            Ok(v) => Ok(Caller::new(v, guard, parts)),
            Err(error) => Err(Refusal { error, guard }),
        }
    }
}

/// Middleware (`axum::middleware::from_fn_with_state(guard, protect)`)
/// for routes whose handlers are not axum extractors (an rmcp service):
/// verifies the request, puts the [`Caller`] in its extensions, and, when
/// the body is an MCP `tools/call` of a tool listed in
/// [`Guard::tool_scopes`], refuses it with 403 `insufficient_scope` unless
/// the token has that tool's scopes (MCP authorization, scope challenge
/// handling), so that the client steps up instead of failing the call.
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
    let caller = Caller::new(verified, guard.clone(), &parts);
    let body = if guard.tool_scopes.is_empty() || parts.method != http::Method::POST {
        body
    } else {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_MCP_BODY).await else {
            return (
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            )
                .into_response();
        };
        for tool in called_tools(&bytes) {
            if let Some(scopes) = guard.tool_scopes.get(&tool) {
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                if let Err(refusal) = caller.require(&scopes) {
                    return refusal.into_response();
                }
            }
        }
        axum::body::Body::from(bytes)
    };
    parts.extensions.insert(caller);
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Largest MCP request body [`protect`] reads to find tool calls.
const MAX_MCP_BODY: usize = 4 << 20;

/// The tool names of the `tools/call` requests in a JSON-RPC message or
/// batch; anything else (or not JSON) names none and is left to the MCP
/// service to answer.
fn called_tools(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Params {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Message {
        method: Option<String>,
        params: Option<serde_json::Value>,
    }
    let calls = |m: Message| {
        (m.method.as_deref() == Some("tools/call"))
            .then(|| {
                m.params
                    .and_then(|p| serde_json::from_value::<Params>(p).ok())
            })
            .flatten()
            .map(|p| p.name)
    };
    if let Ok(one) = serde_json::from_slice::<Message>(body) {
        return calls(one).into_iter().collect();
    }
    serde_json::from_slice::<Vec<Message>>(body)
        .map(|batch| batch.into_iter().filter_map(calls).collect())
        .unwrap_or_default()
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
