//! Proof-of-work login (issue 15), the HTTP side:
//!
//! - `POST /login-requests` (a site, authenticated as a confidential
//!   client registered for the pow-login grant, and vouched for by an
//!   operator unless `--pow-login-unvouched`; optional `agent` and
//!   `scope`) → `login_request_id`, `expires_in`, `interval`.
//! - `GET /login-requests/{id}` (an agent, with its passport and a DPoP
//!   proof of its key) → a single-use `challenge`, the `difficulty`, the
//!   site (with `site_verified`: whether an operator vouched for its
//!   name) and the scopes.
//! - `POST /login-requests/{id}/approve` (`challenge`, `nonce`) or
//!   `/deny` (`challenge`), by the same agent.
//! - `GET /login-requests/{id}/events` (the site) → server-sent events:
//!   one `outcome` event, then the stream closes. The approval's passport
//!   rides in the event body (never a URL) for the first listener or
//!   poller that sees it, exactly once, and only while the site is
//!   allowed the grant (the same rule as polling `/token`). Streams are
//!   capped per address, per site and per node.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ClientIp, OAuthForm, json_no_store};
use crate::agents::login;
use crate::clients::Public;
use crate::error::{Error, OAuthError, Result};
use crate::grants::pow_login::{self, Outcome};
use crate::oauth::scope::Scope;
use crate::state::{AppState, State as AppStateInner};
use crate::store::agents::AgentRow;
use crate::store::audit::AuditEvent;
use crate::store::login_requests::{self, APPROVED, DENIED, NewLoginRequest};
use agentauth_resource::ResourceError;

/// Most open event streams one address may hold.
pub const MAX_STREAMS_PER_ADDRESS: u32 = 100;

/// 429 unless `key` (`site:<id>`, `agent:<id>`, `ciba:<client id>`) is
/// within its rate.
pub(super) fn within_rate(state: &AppStateInner, key: String) -> Result<()> {
    state
        .agents
        .login_limiter
        .check_key(&key)
        .map_err(|not_until| {
            OAuthError::too_many_requests(crate::clock::retry_after(&not_until)).into()
        })
}

/// One open event stream, counted against its address, its site and
/// this node while it lives (SECURITY.md, "Proof-of-work login"): addresses are cheap for
/// an attacker, so a site's streams and the node's are capped too
/// (`--login-streams-per-site`, `--login-streams`).
pub(super) struct StreamSlot {
    state: AppState,
    ip: Option<std::net::IpAddr>,
    site: String,
}

impl StreamSlot {
    pub(super) fn take(state: &AppState, ip: Option<std::net::IpAddr>, site: &str) -> Result<Self> {
        let poisoned = || Error::Internal("stream counter poisoned".into());
        // Lock order: address, then node.
        let mut by_ip = state.agents.login_streams.lock().map_err(|_| poisoned())?;
        let mut streams = state
            .agents
            .login_hub
            .streams
            .lock()
            .map_err(|_| poisoned())?;
        let ip_full = ip.is_some_and(|addr| {
            by_ip
                .get(&addr)
                .is_some_and(|n| *n >= MAX_STREAMS_PER_ADDRESS)
        });
        let site_full = streams
            .by_site
            .get(site)
            .is_some_and(|n| *n >= state.config.login_streams_per_site);
        if ip_full || site_full || streams.total >= state.config.login_streams {
            return Err(OAuthError::too_many_requests(5).into());
        }
        if let Some(addr) = ip {
            *by_ip.entry(addr).or_insert(0) += 1;
        }
        *streams.by_site.entry(site.to_string()).or_insert(0) += 1;
        streams.total += 1;
        Ok(Self {
            state: state.clone(),
            ip,
            site: site.to_string(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut by_ip) = self.state.agents.login_streams.lock() {
            if let Some(addr) = self.ip
                && let Some(n) = by_ip.get_mut(&addr)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by_ip.remove(&addr);
                }
            }
            if let Ok(mut streams) = self.state.agents.login_hub.streams.lock() {
                streams.total = streams.total.saturating_sub(1);
                if let Some(n) = streams.by_site.get_mut(&self.site) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        streams.by_site.remove(&self.site);
                    }
                }
            }
        }
    }
}

/// `POST /login-requests`: a site asks an agent to log in.
pub async fn create(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let site = super::authenticate_client(&state, &headers, &form, Public::Refused, &ip).await?;
    login::check_site(&state.config, &site.client)?;
    let site_id = site.client.client_id.clone();
    within_rate(&state, format!("site:{site_id}"))?;
    let now = state.now();
    let scope = match form.get("scope") {
        Some(text) => Scope::parse(text).map_err(|e| OAuthError::invalid_scope(e.to_string()))?,
        None => Scope::default(),
    };
    let agent = match form.get("agent") {
        Some(id) => match state.agents.get(id).await? {
            Some(a) if a.active => Some(a.id.clone()),
            _ => return Err(OAuthError::invalid_request(format!("no active agent {id:?}")).into()),
        },
        None => None,
    };
    // A cap on what one site may keep waiting (and a per-site rate: the
    // count of recent requests raises nothing here, the cap bounds it).
    if login_requests::open_for_site(&state.db, &site_id, now).await?
        >= state.config.max_open_login_requests
    {
        return Err(OAuthError::too_many_requests(u64::from(
            state.config.login_poll_interval.unsigned_abs(),
        ))
        .into());
    }
    let id = crate::crypto::random_id()?;
    let expires_at = now + state.config.login_request_ttl;
    login_requests::insert(
        &state.db,
        NewLoginRequest {
            id: id.clone(),
            site_client_id: site_id.clone(),
            agent_id: agent.clone(),
            scope: scope.to_string(),
            now,
            expires_at,
            poll_interval: state.config.login_poll_interval,
        },
    )
    .await?;
    state.audit.record(AuditEvent {
        at: now,
        event: "login_request.created",
        client_id: Some(site_id),
        subject: agent.clone(),
        ip: ip.to_audit(),
        detail: json!({ "login_request_id": id, "scope": scope.to_string() }),
    });
    Ok(json_no_store(
        StatusCode::CREATED,
        &json!({
            "login_request_id": id,
            "expires_in": state.config.login_request_ttl,
            "interval": state.config.login_poll_interval,
            "events_uri": format!("{}/login-requests/{id}/events", state.config.issuer),
        }),
    ))
}

/// The agent calling: its passport (`Authorization: DPoP <passport>`) and
/// a DPoP proof by the passport's key for this very request. Returns the
/// agent and the key it proved.
async fn agent_caller(
    state: &AppStateInner,
    headers: &HeaderMap,
    htm: &str,
    htu: &str,
) -> Result<(std::sync::Arc<AgentRow>, String)> {
    let invalid = |why: &'static str| Error::from(OAuthError::invalid_token(why));
    let required = "an agent's passport is required (Authorization: DPoP <passport>)";
    let token = match agentauth_resource::verifier::bearer_or_dpop(headers) {
        Ok((token, true)) => token,
        Ok((_, false)) | Err(ResourceError::MissingToken) => return Err(invalid(required)),
        Err(ResourceError::InvalidRequest(why)) => {
            return Err(OAuthError::invalid_request(why).into());
        }
        Err(_) => return Err(invalid(required)),
    };
    let proof = super::dpop::DpopHeader::from_headers(headers)?
        .0
        .ok_or_else(|| OAuthError::invalid_dpop_proof("exactly one DPoP proof is required"))?;
    let proof = super::dpop::check(state, &proof, htm, htu, Some(token)).await?;
    proof.spend.confirm().await?;
    let passport = crate::tokens::live_passport(&state.tokens, token)
        .await?
        .ok_or_else(|| invalid("the passport is not active"))?;
    if passport
        .aud
        .as_ref()
        .is_some_and(|aud| !aud.contains(&state.config.issuer))
    {
        return Err(invalid("the passport is for another site"));
    }
    if passport.cnf.jkt != proof.jkt {
        return Err(
            OAuthError::invalid_dpop_proof("the proof key is not the passport's key").into(),
        );
    }
    let agent = state
        .agents
        .get(&passport.sub)
        .await?
        .filter(|a| a.active)
        .ok_or_else(|| invalid("the agent is disabled"))?;
    Ok((agent, proof.jkt.clone()))
}

fn url(state: &AppStateInner, id: &str, tail: &str) -> String {
    format!("{}/login-requests/{id}{tail}", state.config.issuer)
}

fn not_found() -> Error {
    OAuthError::new(404, "invalid_request", "no such login request").into()
}

/// `GET /login-requests/{id}`: the agent reads the request and gets a
/// fresh single-use challenge.
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Response> {
    let (agent, _) = agent_caller(&state, &headers, "GET", &url(&state, &id, "")).await?;
    within_rate(&state, format!("agent:{}", agent.id))?;
    let now = state.now();
    let row = login_requests::get(&state.db, &id)
        .await?
        .filter(|r| r.agent_id.as_deref().is_none_or(|a| a == agent.id))
        .ok_or_else(not_found)?;
    if row.status != login_requests::PENDING || row.expires_at <= now {
        return Err(OAuthError::invalid_request(if row.expires_at <= now {
            "the login request expired"
        } else {
            "the login request was already answered"
        })
        .into());
    }
    // The server sets the difficulty: the base, raised for a site or an
    // agent that asks for many challenges.
    let bump = |key: String| {
        let n = state.agents.login_challenges.get(&key).unwrap_or(0) + 1;
        state.agents.login_challenges.insert(key, n);
        n
    };
    let recent =
        bump(format!("agent:{}", agent.id)).max(bump(format!("site:{}", row.site_client_id)));
    let difficulty = login::difficulty(
        state.config.pow_difficulty,
        recent,
        state.config.pow_free_per_minute,
    );
    let challenge = crate::crypto::random_id()?;
    if !login_requests::set_challenge(&state.db, &id, &agent.id, &challenge, difficulty, now)
        .await?
    {
        return Err(OAuthError::invalid_request("the login request was already answered").into());
    }
    let site = state.clients.get(&row.site_client_id).await?;
    // The name and URI are the site's own claims; the agent (and the
    // person it may show them to) learns whether an operator vouched for
    // them (SECURITY.md, Proof-of-work login boundaries).
    let verified = site.as_deref().is_some_and(login::site_verified);
    let name = site.as_ref().and_then(|s| s.metadata.client_name.clone());
    let display_name = match (&name, verified) {
        (Some(n), true) => n.clone(),
        (Some(n), false) => format!("{n} (unverified)"),
        (None, _) => format!("{} (unverified)", row.site_client_id),
    };
    state.audit.record(AuditEvent {
        at: now,
        event: "login_request.challenged",
        client_id: Some(row.site_client_id.clone()),
        subject: Some(agent.id.clone()),
        ip: ip.to_audit(),
        detail: json!({ "login_request_id": id, "difficulty": difficulty }),
    });
    Ok(json_no_store(
        StatusCode::OK,
        &json!({
            "login_request_id": id,
            "challenge": challenge,
            "difficulty": difficulty,
            "algorithm": "sha-256, leading zero bits of SHA-256(challenge || nonce)",
            "site": {
                "client_id": row.site_client_id,
                "name": name,
                "uri": site.as_ref().and_then(|s| s.metadata.client_uri.clone()),
                "verified": verified,
                "display_name": display_name,
            },
            "site_verified": verified,
            "scope": row.scope,
            "expires_in": (row.expires_at - now).max(0),
        }),
    ))
}

/// `POST /login-requests/{id}/approve`: the agent's answer, with the
/// solved challenge.
pub async fn approve(
    state: State<AppState>,
    path: Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    answer(state, path, ip, headers, form, APPROVED).await
}

/// `POST /login-requests/{id}/deny`.
pub async fn deny(
    state: State<AppState>,
    path: Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    answer(state, path, ip, headers, form, DENIED).await
}

async fn answer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
    status: &'static str,
) -> Result<Response> {
    let tail = if status == APPROVED {
        "/approve"
    } else {
        "/deny"
    };
    let (agent, jkt) = agent_caller(&state, &headers, "POST", &url(&state, &id, tail)).await?;
    let form = form?;
    let challenge = form.require("challenge")?;
    let now = state.now();
    let row = login_requests::get(&state.db, &id)
        .await?
        .filter(|r| r.agent_id.as_deref().is_none_or(|a| a == agent.id))
        .ok_or_else(not_found)?;
    if status == APPROVED {
        let nonce = form.require("nonce")?;
        if nonce.len() > 64 {
            return Err(OAuthError::invalid_request("nonce is longer than 64 characters").into());
        }
        // The difficulty stored with the challenge: a value the agent
        // sends is not read.
        let difficulty = row
            .difficulty
            .and_then(|d| u32::try_from(d).ok())
            .unwrap_or(u32::MAX);
        let current = row.challenge.as_deref() == Some(challenge);
        if current && !login::solves(challenge, nonce, difficulty) {
            return Err(OAuthError::invalid_request(format!(
                "SHA-256(challenge || nonce) needs {difficulty} leading zero bits"
            ))
            .into());
        }
    }
    let won = login_requests::resolve(
        &state.db,
        &id,
        &agent.id,
        challenge,
        status,
        (status == APPROVED).then_some(jkt.as_str()),
        now,
    )
    .await?;
    if !won {
        let why = if row.expires_at <= now {
            "the login request expired"
        } else if row.status != login_requests::PENDING {
            "the login request was already answered"
        } else {
            "the challenge is not the current one for this agent (fetch the request again)"
        };
        return Err(OAuthError::invalid_request(why).into());
    }
    state.audit.record(AuditEvent {
        at: now,
        event: if status == APPROVED {
            "login_request.approved"
        } else {
            "login_request.denied"
        },
        client_id: Some(row.site_client_id.clone()),
        subject: Some(agent.id.clone()),
        ip: ip.to_audit(),
        detail: json!({ "login_request_id": id, "jkt": jkt }),
    });
    login::announce(&state.agents, &id).await;
    Ok(json_no_store(
        StatusCode::OK,
        &json!({ "login_request_id": id, "status": status }),
    ))
}

/// How often a waiting stream reads its row again even without a wake-up:
/// a safety net only (a NOTIFY that failed to be sent); a node's listener
/// wakes every stream when it (re)connects, and the in-process wake-up
/// covers SQLite. Expiry wakes a stream on time regardless.
const REREAD: Duration = Duration::from_secs(60);

/// `GET /login-requests/{id}/events`: server-sent events for the site.
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Response> {
    let site = super::authenticate_client(
        &state,
        &headers,
        &OAuthForm::default(),
        Public::Refused,
        &ip,
    )
    .await?;
    let row = login_requests::get(&state.db, &id)
        .await?
        .filter(|r| r.site_client_id == site.client.client_id)
        .ok_or_else(not_found)?;
    login::check_site(&state.config, &site.client)?;
    let slot = StreamSlot::take(&state, ip.0, &site.client.client_id)?;
    let waker = state.agents.login_hub.waker(&id);
    let expires_at = row.expires_at;
    let stream = futures_util::stream::unfold(
        Some((state, id, waker, slot)),
        move |st| async move {
            let (state, id, waker, slot) = st?;
            loop {
                let notified = waker.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let now = state.now();
                let row = match login_requests::get(&state.db, &id).await {
                    Ok(Some(row)) => row,
                    Ok(None) => {
                        return Some((
                            Ok::<_, Infallible>(outcome_event(&id, "expired", None)),
                            None,
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "login request read failed; retrying");
                        tokio::time::sleep(REREAD).await;
                        continue;
                    }
                };
                match pow_login::outcome(&state.grant_env(), &row, now).await {
                    Ok(Outcome::Pending) => {}
                    Ok(o) => {
                        let event = outcome_event(&id, o.status(), Some(&o));
                        drop(slot);
                        return Some((Ok(event), None));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "login request outcome failed; retrying");
                    }
                }
                let until_expiry =
                    Duration::from_secs(u64::try_from(expires_at - now).unwrap_or(0));
                tokio::select! {
                    _ = state.agents.login_hub.closed() => return None,
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(REREAD.min(until_expiry.max(Duration::from_millis(200)))) => {}
                }
            }
        },
    );
    let mut response = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("heartbeat"),
        )
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

fn outcome_event(id: &str, status: &str, outcome: Option<&Outcome>) -> Event {
    let mut data = json!({ "login_request_id": id, "status": status });
    match outcome {
        Some(Outcome::Unauthorized(e)) => {
            data["error"] = json!(e.error);
            data["error_description"] = json!(e.description);
        }
        Some(Outcome::Delivered {
            passport,
            expires_in,
            scope,
        }) => {
            data["passport"] = json!(passport);
            data["issued_token_type"] = json!(agentauth_resource::claims::PASSPORT_TOKEN_TYPE);
            data["expires_in"] = json!(expires_in);
            data["scope"] = json!(scope);
        }
        Some(Outcome::AlreadyDelivered) => data["delivered"] = json!(true),
        _ => {}
    }
    Event::default().event("outcome").data(data.to_string())
}
