//! The resource-server side of our tokens: verify an access token and,
//! when it is DPoP-bound, its proof (RFC 9449 §7), and answer failures with
//! RFC 6750 / RFC 9449 `WWW-Authenticate` challenges.
//!
//! Keys come from any [`KeySource`]: a [`crate::StaticKeys`] read from a
//! JWKS, or the authorization server's own key ring.
//!
//! # Agent passports
//!
//! An agent passport (`typ: agent-passport+jwt`) says who an agent is
//! ("agent X of owner Y, holding key K"); it is not an access token, and
//! a verifier refuses it (401 `invalid_token`) unless the resource opts in
//! with [`ResourceVerifier::accept_passports`]. Opted in, it takes only a
//! passport whose `aud` names this resource (one with no `aud` is
//! refused), proven by a DPoP proof of its `cnf.jkt` key, and grants
//! **no scope** by itself: the resource's own policy
//! ([`ResourceVerifier::passport_scopes`]) decides what an identity may
//! do. See SECURITY.md, "Passport used as an access token".
//!
//! ```
//! use agentauth_resource::{ResourceVerifier, StaticKeys};
//! let verifier = ResourceVerifier::new("https://auth.example.com", "https://mcp.example.com/mcp", StaticKeys::default())
//!     .accept_passports(true)
//!     // The agents of one owner may read; nobody else gets a scope.
//!     .passport_scopes(|passport| match passport.owner.as_str() {
//!         "user-42" => vec!["tools:read".to_string()],
//!         _ => Vec::new(),
//!     });
//! assert!(verifier.accepts_passports());
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use crate::claims::{ACCESS_TOKEN_TYP, AccessTokenClaims, PASSPORT_TYP, PassportClaims};
use crate::dpop::{self, DPOP_ALGS, DpopError, Expectations, NonceKey};
use crate::jwt::{KeySource, VerifyError, verify_jwt};

/// Why a request was refused; each maps to one challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceError {
    /// No credentials at all (RFC 6750 §3.1: no error code).
    MissingToken,
    InvalidRequest(&'static str),
    InvalidToken(&'static str),
    InvalidDpopProof(&'static str),
    UseDpopNonce(String),
    /// RFC 6750 §3.1: a valid token without these scopes (403), so that
    /// the client can step up.
    InsufficientScope(Vec<String>),
    /// A valid token presented for something it does not grant that no
    /// scope would grant either: a token that approves one MCP tool call
    /// (RFC 9396 `mcp_tool_call`, see [`crate::details`]) presented for
    /// another call or method. 403 `insufficient_scope` (RFC 6750 §3.1:
    /// "the request requires higher privileges than provided by the
    /// access token") with this description and no `scope` parameter, so
    /// that a client does not try to step up scopes for it.
    OutsideApproval(&'static str),
    /// The token could not be checked now (introspection mode, the
    /// authorization server unreachable): 503, try again.
    Unavailable,
    /// The token's status list (draft-ietf-oauth-status-list) could not
    /// be fetched and the last good one is past its grace, or was never
    /// fetched: 503 with `Retry-After: retry_after` (seconds, at least 1),
    /// when the kit will try the list again. Not the client's fault: its
    /// token may well be valid.
    StatusListUnavailable {
        retry_after: u32,
    },
}

/// What kind of credential a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An RFC 9068 access token (`typ: at+jwt`), possibly delegated
    /// (`act`).
    Access,
    /// An agent passport (`typ: agent-passport+jwt`), always DPoP-bound;
    /// only where the resource accepts passports
    /// ([`ResourceVerifier::accept_passports`]).
    Passport,
}

/// A verified request: the caller's claims and their kind. A passport's
/// are read as an access token's: `sub`, `client_id` and `agent_id` name
/// the agent, `owner` its owner, `extra["agent_name"]` its name, `cnf`
/// its key, `aud` its sites; `scope` is what the resource's
/// [`ResourceVerifier::passport_scopes`] policy grants (none without
/// one), never the passport's own `scope` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub claims: AccessTokenClaims,
    pub kind: TokenKind,
}

/// Signature-checked tokens, by SHA-256 of the token: a resource sees the
/// same token many times, and a signature check costs 30-100 µs. An entry
/// is used only while the key that signed it is still published.
struct Checked {
    token: Token,
    kid: String,
}

/// A signature-checked token, as signed (kept behind an `Arc` in the
/// cache, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Token {
    Access(AccessTokenClaims),
    Passport(PassportClaims),
}

/// A resource's policy for passports: the scopes an agent's identity is
/// granted here (see [`ResourceVerifier::passport_scopes`]).
pub type PassportScopes = dyn Fn(&PassportClaims) -> Vec<String> + Send + Sync;

/// What every challenge of one resource also says (RFC 9728 §5.1): where
/// its protected resource metadata is, and the scopes a token needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChallengeContext {
    /// URL of the resource's RFC 9728 metadata (`resource_metadata`).
    pub resource_metadata: Option<String>,
    /// Scopes to ask for (`scope`), space-separated, when none more
    /// specific is known.
    pub scope: Option<String>,
}

/// Verifies requests for one resource (one `aud`).
pub struct ResourceVerifier<K> {
    pub issuer: String,
    pub audience: String,
    pub keys: K,
    pub iat_window: i64,
    /// Clock skew allowed between the authorization server and this
    /// resource on `exp` and `nbf`, in seconds (default 30).
    pub leeway: i64,
    pub nonces: Option<NonceKey>,
    /// (jkt, jti) of proofs seen, each kept for as long as `iat_window`
    /// still accepts it (the value: [`dpop::replay_retention`]).
    replay: Cache<String, Duration>,
    checked: Option<Cache<[u8; 32], Arc<Checked>>>,
    accept_passports: bool,
    passport_scopes: Option<Arc<PassportScopes>>,
    require_dpop: bool,
}

impl<K: KeySource> ResourceVerifier<K> {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, keys: K) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            keys,
            iat_window: 60,
            leeway: 30,
            nonces: None,
            replay: Cache::builder()
                .max_capacity(1_000_000)
                // A spent proof stays for the retention it was stored with:
                // derived from `iat_window` when it was spent, so that a
                // resource that widens the window keeps proofs for all of it
                // (SECURITY.md, Arithmetic and windows).
                .expire_after(crate::once::KeptFor)
                .build(),
            checked: Some(
                Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(Duration::from_secs(300))
                    .build(),
            ),
            accept_passports: false,
            passport_scopes: None,
            require_dpop: false,
        }
    }

    /// RFC 9728 `dpop_bound_access_tokens_required`: refuse tokens that
    /// are not DPoP-bound (401 with the `DPoP` challenge), as the
    /// resource's metadata says ([`crate::guard::Guard::new`] reads it there).
    pub fn require_dpop(mut self, require: bool) -> Self {
        self.require_dpop = require;
        self
    }

    /// Whether agent passports are accepted here as a caller's credential
    /// (default: no, they are refused with 401 `invalid_token` like any
    /// token that is not an access token, RFC 8725 §3.11). Turn it on only
    /// for a resource whose handlers look at who the agent is
    /// ([`Verified::kind`] is [`TokenKind::Passport`]); a passport is
    /// accepted only when its `aud` names this resource (the
    /// authorization server issues such passports only for a resource
    /// whose registry entry says `accept_passports = true`), with a DPoP
    /// proof of its key, and grants no scope unless
    /// [`Self::passport_scopes`] maps the identity to some.
    pub fn accept_passports(mut self, accept: bool) -> Self {
        self.accept_passports = accept;
        self
    }

    /// Whether [`Self::accept_passports`] is on.
    pub fn accepts_passports(&self) -> bool {
        self.accept_passports
    }

    /// The resource's policy for accepted passports: the scopes the agent
    /// (its `sub`/`agent_id`, `owner`, `agent_name`, `cnf` key) may use
    /// here, asked on every request (so it may read a table that
    /// changes). Without one a passport carries no scope, and routes that
    /// [`require_scopes`] answer 403 `insufficient_scope`. The passport's
    /// own `scope` claim is the agent's standing at the issuer, not a grant
    /// by this resource: copying it would make the passport an access
    /// token for every resource at once. Has no effect unless
    /// [`Self::accept_passports`] is on.
    pub fn passport_scopes(
        mut self,
        policy: impl Fn(&PassportClaims) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.passport_scopes = Some(Arc::new(policy));
        self
    }

    /// Checks every token's signature on every request (no cache of
    /// signature-checked tokens; benchmarks of the first sight use it).
    pub fn without_token_cache(mut self) -> Self {
        self.checked = None;
        self
    }

    /// The token's claims after the signature check (cached) and the
    /// issuer, audience and time checks (never cached). A passport is
    /// refused before any cryptography unless passports are accepted.
    fn token(&self, token: &str, now: i64) -> Result<Verified, ResourceError> {
        let invalid = || ResourceError::InvalidToken("the access token is invalid");
        let cache = self
            .checked
            .as_ref()
            .map(|cache| (cache, crate::sha256(token.as_bytes())));
        let cached = cache
            .as_ref()
            .and_then(|(cache, digest)| cache.get(digest))
            .filter(|c| self.keys.key(&c.kid).is_some());
        let checked = match cached {
            Some(c) => c,
            None => {
                let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
                let kid = header.kid.clone().ok_or_else(invalid)?;
                let typ = header.typ.as_deref().unwrap_or_default();
                let is = |want: &str| {
                    typ.eq_ignore_ascii_case(want)
                        || typ
                            .get(..12)
                            .is_some_and(|p| p.eq_ignore_ascii_case("application/"))
                            && typ[12..].eq_ignore_ascii_case(want)
                };
                let key_for = |kid: &str| self.keys.key(kid);
                let token = if is(PASSPORT_TYP) {
                    if !self.accept_passports {
                        return Err(PASSPORTS_REFUSED);
                    }
                    Token::Passport(
                        verify_jwt(token, PASSPORT_TYP, key_for)
                            .map_err(|_: VerifyError| invalid())?,
                    )
                } else {
                    Token::Access(
                        verify_jwt(token, ACCESS_TOKEN_TYP, key_for).map_err(|_| invalid())?,
                    )
                };
                let checked = Arc::new(Checked { token, kid });
                if let Some((cache, digest)) = cache {
                    cache.insert(digest, checked.clone());
                }
                checked
            }
        };
        let verified = match &checked.token {
            Token::Access(claims) => Verified {
                claims: claims.clone(),
                kind: TokenKind::Access,
            },
            Token::Passport(passport) => self.passport(passport)?,
        };
        let claims = &verified.claims;
        if claims.iss != self.issuer {
            return Err(ResourceError::InvalidToken(
                "the access token is from another issuer",
            ));
        }
        if !claims.aud.contains(&self.audience) {
            return Err(ResourceError::InvalidToken(
                "the access token is for another resource",
            ));
        }
        if claims.exp.saturating_add(self.leeway) <= now {
            return Err(ResourceError::InvalidToken("the access token has expired"));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(ResourceError::InvalidToken(
                "the access token is not valid yet",
            ));
        }
        Ok(verified)
    }

    /// An accepted passport's claims in the access-token shape handlers
    /// read: only one whose `aud` names this resource, with the scopes of
    /// this resource's policy and none of its own.
    fn passport(&self, p: &PassportClaims) -> Result<Verified, ResourceError> {
        if !self.accept_passports {
            return Err(PASSPORTS_REFUSED);
        }
        let aud = match &p.aud {
            Some(aud) if aud.contains(&self.audience) => aud.clone(),
            Some(_) => {
                return Err(ResourceError::InvalidToken(
                    "the passport is for another site",
                ));
            }
            None => {
                return Err(ResourceError::InvalidToken(
                    "the passport names no site; ask for one whose audience is this resource",
                ));
            }
        };
        let scopes: Vec<String> = self
            .passport_scopes
            .as_ref()
            .map(|policy| policy(p))
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let mut extra = serde_json::Map::new();
        extra.insert("agent_name".into(), p.agent_name.clone().into());
        Ok(Verified {
            kind: TokenKind::Passport,
            claims: AccessTokenClaims {
                iss: p.iss.clone(),
                aud,
                client_id: p.sub.clone(),
                sub: p.sub.clone(),
                scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
                jti: p.jti.clone(),
                iat: p.iat,
                exp: p.exp,
                nbf: None,
                cnf: Some(p.cnf.clone()),
                act: None,
                may_act: None,
                agent_id: Some(p.agent_id.clone()),
                owner: Some(p.owner.clone()),
                status: p.status.clone(),
                authorization_details: None,
                extra,
            },
        })
    }

    /// RFC 6750 §2.1 / RFC 9449 §7.1: the token from `Authorization`, then
    /// RFC 9068 §4 checks, then for bound tokens RFC 9449 §4.3 and §7.
    /// `url` is the resource URL as the client addressed it (from config,
    /// not the `Host` header).
    pub fn verify(
        &self,
        method: &str,
        url: &str,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<AccessTokenClaims, ResourceError> {
        self.verify_request(method, url, headers, now)
            .map(|v| v.claims)
    }

    /// [`Self::verify`], for access tokens and agent passports alike,
    /// saying which it was.
    pub fn verify_request(
        &self,
        method: &str,
        url: &str,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<Verified, ResourceError> {
        self.verify_request_with_certificate(method, url, headers, now, None)
    }

    /// [`Self::verify_request`] for a resource that terminates mutual TLS:
    /// a token bound to an agentauth bridge certificate (`cnf.x5t#S256`)
    /// may also come under the `Bearer` scheme over a connection whose
    /// client certificate (`client_certificate`, DER) is that certificate
    /// (RFC 8705 §3). With the `DPoP` scheme the proof is checked as ever.
    pub fn verify_request_with_certificate(
        &self,
        method: &str,
        url: &str,
        headers: &HeaderMap,
        now: i64,
        client_certificate: Option<&[u8]>,
    ) -> Result<Verified, ResourceError> {
        let (token, dpop_scheme) = bearer_or_dpop(headers)?;
        let verified = self.token(token, now)?;
        let proofs: Vec<&HeaderValue> = headers.get_all("dpop").iter().collect();
        match (&verified.claims.cnf, dpop_scheme) {
            // RFC 8705 §3: the certificate the token is bound to.
            (Some(cnf), false)
                if client_certificate.is_some_and(|der| cnf.matches_certificate(der)) =>
            {
                Ok(verified)
            }
            // SECURITY.md, "Resource server kit and DPoP": a bound token presented as a bearer token.
            (Some(_), false) => Err(ResourceError::InvalidToken(
                "a DPoP-bound token must use the DPoP scheme (or, over mutual TLS, the certificate it is bound to)",
            )),
            (None, true) => Err(ResourceError::InvalidToken("the token is not DPoP-bound")),
            (None, false) if self.require_dpop => Err(ResourceError::InvalidToken(
                "this resource takes only DPoP-bound tokens",
            )),
            (None, false) => Ok(verified),
            (Some(cnf), true) => {
                let [proof] = proofs.as_slice() else {
                    return Err(ResourceError::InvalidDpopProof(
                        "exactly one DPoP proof is required",
                    ));
                };
                let proof = proof
                    .to_str()
                    .map_err(|_| ResourceError::InvalidDpopProof("DPoP header is not ASCII"))?;
                let expect = Expectations {
                    htm: method,
                    htu: url,
                    now,
                    iat_window: self.iat_window,
                    access_token: Some(token),
                    nonces: self.nonces.as_ref(),
                };
                let proven = dpop::verify_proof(proof, &expect).map_err(|e| match e {
                    DpopError::UseNonce => ResourceError::UseDpopNonce(
                        self.nonces
                            .as_ref()
                            .map(|n| n.current(now))
                            .unwrap_or_default(),
                    ),
                    DpopError::Invalid(why) => ResourceError::InvalidDpopProof(why),
                })?;
                // RFC 9449 §7.1: the proof key is the key the token is bound to.
                if proven.jkt != cnf.jkt {
                    return Err(ResourceError::InvalidDpopProof(
                        "the proof key is not the key the token is bound to",
                    ));
                }
                if !self.spend(&proven.jkt, &proven.jti, proven.iat, now) {
                    return Err(ResourceError::InvalidDpopProof(
                        "DPoP proof jti was already used",
                    ));
                }
                Ok(verified)
            }
        }
    }
}

impl<K> ResourceVerifier<K> {
    /// RFC 9449 §11.1: spends the proof `(jkt, jti)`; `false` when it was
    /// spent before. Serialized per key, so exactly one concurrent use wins
    /// (`or_insert` makes no such promise, moka #545).
    fn spend(&self, jkt: &str, jti: &str, iat: i64, now: i64) -> bool {
        let retention = dpop::replay_retention(iat, now, self.iat_window);
        let spent = self
            .replay
            .entry(format!("{jkt}:{jti}"))
            .and_compute_with(|seen| {
                if seen.is_some() {
                    Op::Nop
                } else {
                    Op::Put(retention)
                }
            });
        matches!(spent, CompResult::Inserted(_))
    }
}

/// RFC 6750 §2.1 / RFC 9449 §7.1: the one `Authorization` header's token,
/// and whether it came under the `DPoP` scheme (any other scheme is
/// [`ResourceError::MissingToken`]).
pub fn bearer_or_dpop(headers: &HeaderMap) -> Result<(&str, bool), ResourceError> {
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    let value = auth.next().ok_or(ResourceError::MissingToken)?;
    if auth.next().is_some() {
        return Err(ResourceError::InvalidRequest(
            "more than one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ResourceError::InvalidRequest("malformed Authorization header"))?;
    let (scheme, token) = value.split_once(' ').ok_or(ResourceError::InvalidRequest(
        "malformed Authorization header",
    ))?;
    let dpop_scheme = scheme.eq_ignore_ascii_case("dpop");
    if !dpop_scheme && !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ResourceError::MissingToken);
    }
    Ok((token.trim(), dpop_scheme))
}

/// A passport where passports are not accepted (SECURITY.md, "Passport
/// used as an access token").
pub(crate) const PASSPORTS_REFUSED: ResourceError =
    ResourceError::InvalidToken("an agent passport is not an access token at this resource");

/// An HTTP status with the `WWW-Authenticate` challenges and the
/// `DPoP-Nonce` that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub status: StatusCode,
    pub www_authenticate: Vec<HeaderValue>,
    pub dpop_nonce: Option<HeaderValue>,
}

/// RFC 6750 §3.1: a route that needs `required` scopes; `Err` names the
/// scopes the client must step up to (403 `insufficient_scope`).
pub fn require_scopes(claims: &AccessTokenClaims, required: &[&str]) -> Result<(), ResourceError> {
    let missing = claims.missing_scopes(required);
    if missing.is_empty() {
        Ok(())
    } else {
        // Ask for everything the route needs plus what the token already
        // has, so that a step-up does not lose the earlier scopes.
        let mut scopes: Vec<String> = claims.scopes().map(str::to_string).collect();
        scopes.extend(missing.iter().map(|s| s.to_string()));
        Err(ResourceError::InsufficientScope(scopes))
    }
}

impl ResourceError {
    /// RFC 6750 §3 and RFC 9449 §7.1: a `DPoP` challenge (with `algs`)
    /// always, and a `Bearer` one for bearer failures, first: clients that
    /// read only the first challenge of a joined header (the MCP
    /// TypeScript SDK) then still find `resource_metadata` and `scope`.
    pub fn challenge(&self) -> Challenge {
        self.challenge_in(&ChallengeContext::default())
    }

    /// [`Self::challenge`] with the resource's `resource_metadata` and
    /// `scope` parameters (RFC 9728 §5.1), which MCP clients follow to find
    /// the authorization server and the scopes to ask for.
    pub fn challenge_in(&self, context: &ChallengeContext) -> Challenge {
        let quote = |s: &str| s.replace(['"', '\\'], "'");
        let algs = format!(r#"algs="{}""#, DPOP_ALGS.join(" "));
        let scope = match self {
            ResourceError::InsufficientScope(needed) => Some(needed.join(" ")),
            ResourceError::OutsideApproval(_) => None,
            _ => context.scope.clone(),
        };
        // Parameters every challenge of this resource carries.
        let mut common = Vec::new();
        if let Some(url) = &context.resource_metadata {
            common.push(format!(r#"resource_metadata="{}""#, quote(url)));
        }
        if let Some(scope) = scope.filter(|s| !s.is_empty()) {
            common.push(format!(r#"scope="{}""#, quote(&scope)));
        }
        let error = |code: &str, why: &str| {
            vec![
                format!(r#"error="{code}""#),
                format!(r#"error_description="{}""#, quote(why)),
            ]
        };
        let challenge = |scheme: &str, mut params: Vec<String>, dpop: bool| {
            params.extend(common.iter().cloned());
            if dpop {
                params.push(algs.clone());
            }
            if params.is_empty() {
                scheme.to_string()
            } else {
                format!("{scheme} {}", params.join(", "))
            }
        };
        let (status, challenges, nonce) = match &self {
            ResourceError::MissingToken => (
                StatusCode::UNAUTHORIZED,
                vec![
                    challenge("Bearer", vec![r#"realm="agentauth""#.to_string()], false),
                    challenge("DPoP", Vec::new(), true),
                ],
                None,
            ),
            ResourceError::InvalidRequest(why) => (
                StatusCode::BAD_REQUEST,
                vec![challenge("Bearer", error("invalid_request", why), false)],
                None,
            ),
            ResourceError::InvalidToken(why) => (
                StatusCode::UNAUTHORIZED,
                vec![
                    challenge("Bearer", error("invalid_token", why), false),
                    challenge("DPoP", error("invalid_token", why), true),
                ],
                None,
            ),
            ResourceError::InvalidDpopProof(why) => (
                StatusCode::UNAUTHORIZED,
                vec![challenge("DPoP", error("invalid_dpop_proof", why), true)],
                None,
            ),
            ResourceError::UseDpopNonce(nonce) => (
                StatusCode::UNAUTHORIZED,
                vec![challenge(
                    "DPoP",
                    error("use_dpop_nonce", "a DPoP nonce is required"),
                    true,
                )],
                Some(nonce.clone()),
            ),
            ResourceError::Unavailable | ResourceError::StatusListUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, Vec::new(), None)
            }
            ResourceError::InsufficientScope(_) | ResourceError::OutsideApproval(_) => {
                let why = match self {
                    ResourceError::OutsideApproval(why) => why,
                    _ => "the token lacks a scope this request needs",
                };
                (
                    StatusCode::FORBIDDEN,
                    vec![
                        challenge("Bearer", error("insufficient_scope", why), false),
                        challenge("DPoP", error("insufficient_scope", why), true),
                    ],
                    None,
                )
            }
        };
        Challenge {
            status,
            www_authenticate: challenges
                .iter()
                .filter_map(|c| HeaderValue::from_str(c).ok())
                .collect(),
            dpop_nonce: nonce.and_then(|n| HeaderValue::from_str(&n).ok()),
        }
    }

    /// The response headers of [`Self::challenge`], for any HTTP stack.
    pub fn headers(&self) -> (StatusCode, HeaderMap) {
        self.headers_in(&ChallengeContext::default())
    }

    /// The response headers of [`Self::challenge_in`].
    pub fn headers_in(&self, context: &ChallengeContext) -> (StatusCode, HeaderMap) {
        let challenge = self.challenge_in(context);
        let mut headers = HeaderMap::new();
        for v in challenge.www_authenticate {
            headers.append(header::WWW_AUTHENTICATE, v);
        }
        if let Some(v) = challenge.dpop_nonce {
            headers.insert("dpop-nonce", v);
        }
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        (challenge.status, headers)
    }

    /// RFC 9110 §10.2.3 `Retry-After` of a 503, in seconds.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ResourceError::Unavailable => Some(5),
            ResourceError::StatusListUnavailable { retry_after } => Some((*retry_after).max(1)),
            _ => None,
        }
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ResourceError {
    fn into_response(self) -> axum::response::Response {
        self.headers().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 28 item 13: the replay store's lifetime follows `iat_window`
    /// (it was fixed at 121 s). Moka's clock cannot be injected, so this
    /// waits: a 0 s window keeps a proof 1 s, a 600 s window keeps it on.
    #[test]
    fn replay_store_lifetime_follows_the_iat_window() {
        let now = 1_800_000_000;
        let mut narrow = ResourceVerifier::new("i", "a", crate::StaticKeys::default());
        narrow.iat_window = 0;
        let mut wide = ResourceVerifier::new("i", "a", crate::StaticKeys::default());
        wide.iat_window = 600;
        assert!(narrow.spend("k", "j", now, now));
        assert!(wide.spend("k", "j", now + 600, now));
        assert!(!narrow.spend("k", "j", now, now), "a replay is refused");
        assert!(!wide.spend("k", "j", now + 600, now), "a replay is refused");
        std::thread::sleep(Duration::from_millis(1600));
        narrow.replay.run_pending_tasks();
        wide.replay.run_pending_tasks();
        assert!(
            !narrow.replay.contains_key("k:j"),
            "a 0 s window keeps a proof for 1 s"
        );
        assert!(
            wide.replay.contains_key("k:j"),
            "a 600 s window keeps a proof dated 600 s ahead for 1201 s"
        );
    }

    fn headers(c: &Challenge) -> Vec<String> {
        c.www_authenticate
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn challenges_name_the_metadata_and_scope() {
        let context = ChallengeContext {
            resource_metadata: Some(
                "https://mcp.example.com/.well-known/oauth-protected-resource/mcp".into(),
            ),
            scope: Some("tools:read".into()),
        };
        let c = ResourceError::MissingToken.challenge_in(&context);
        assert_eq!(c.status, StatusCode::UNAUTHORIZED);
        let h = headers(&c);
        assert!(h[1].starts_with("DPoP resource_metadata=\"https://mcp.example.com/"));
        assert!(h[1].contains("scope=\"tools:read\""));
        assert!(h[0].starts_with("Bearer realm=\"agentauth\", resource_metadata="));
        // Without a context, the plain RFC 6750 challenge.
        assert_eq!(
            headers(&ResourceError::MissingToken.challenge())[0],
            "Bearer realm=\"agentauth\""
        );
    }

    #[test]
    fn insufficient_scope_is_403_and_keeps_granted_scopes() {
        let claims: AccessTokenClaims = serde_json::from_value(serde_json::json!({
            "iss": "i", "sub": "s", "aud": "a", "client_id": "c", "jti": "j",
            "iat": 1, "exp": 2, "scope": "tools:read"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(require_scopes(&claims, &["tools:read"]).is_ok());
        let err = require_scopes(&claims, &["tools:read", "tools:admin"]).unwrap_err();
        let c = err.challenge_in(&ChallengeContext::default());
        assert_eq!(c.status, StatusCode::FORBIDDEN);
        let h = headers(&c);
        assert!(h[0].starts_with("Bearer error=\"insufficient_scope\""));
        assert!(
            h[0].contains("scope=\"tools:read tools:admin\""),
            "{}",
            h[0]
        );
    }
}
