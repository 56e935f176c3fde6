//! The owner's approvals (issue 32): backchannel requests waiting for the
//! signed-in owner, live.
//!
//! - `GET /account/approvals`: each pending request with the agent or
//!   client asking, its binding message, the action in words (RFC 9396
//!   details rendered by their type's sentence), the scopes and resources,
//!   and when it expires.
//! - `GET /account/approvals/events`: server-sent events; `pending` with
//!   the ids of the pending requests whenever they change (a request
//!   arrives, is answered elsewhere, or expires). The page's script
//!   reloads the list.
//! - `POST /account/approvals/{id}/options`: a passkey assertion ceremony
//!   whose challenge is bound to this request (its last 16 bytes are the
//!   request id's SHA-256 prefix: the authenticator signs what it approves).
//! - `POST /account/approvals/{id}/approve`: with that assertion (user
//!   verification required), or with the password when the owner has no
//!   passkey. `POST /account/approvals/{id}/deny`: one click.
//!
//! Every decision is in the audit log; a ping-mode client is notified.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::passkeys::{self, json_with, refuse};
use super::signed_in::{CheckedForm, Owner};
use super::{ClientIp, OAuthForm, pages};
use crate::crypto::sha256;
use crate::error::{OAuthError, Result};
use crate::state::{AppState, State as AppStateInner};
use crate::store::audit::AuditEvent;
use crate::store::backchannel::{self, APPROVED, BackchannelRow, DENIED};

const APPROVE: &str = "approve";

/// Failed password approvals per owner before further attempts wait.
const FAILURES_PER_OWNER: u32 = 10;

/// What binds a passkey ceremony to request `id`.
fn bound(id: &str) -> [u8; 16] {
    let mut out = [0; 16];
    out.copy_from_slice(&sha256(format!("agentauth approve {id}").as_bytes())[..16]);
    out
}

/// One pending request, as the page shows it.
async fn view(state: &AppStateInner, row: &BackchannelRow, now: i64) -> Result<serde_json::Value> {
    let (who, kind) = match &row.agent_id {
        Some(agent_id) => (
            state
                .agents
                .get(agent_id)
                .await?
                .map_or_else(|| agent_id.clone(), |a| a.name.clone()),
            "agent",
        ),
        None => (
            state
                .clients
                .get(&row.client_id)
                .await?
                .and_then(|c| c.metadata.client_name.clone())
                .unwrap_or_else(|| row.client_id.clone()),
            "application",
        ),
    };
    let details: Vec<serde_json::Value> = row
        .authorization_details
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let resources: Vec<String> = serde_json::from_str(&row.resources).unwrap_or_default();
    Ok(json!({
        "id": row.id,
        "who": who,
        "who_id": row.agent_id.as_deref().unwrap_or(&row.client_id),
        "kind": kind,
        "binding_message": row.binding_message,
        "actions": state.resources.registry.details.describe(&details),
        "scope": row.scope,
        "resources": resources,
        "expires_in": format!("{} min {} s", (row.expires_at - now).max(0) / 60, (row.expires_at - now).max(0) % 60),
    }))
}

/// `GET /account/approvals`.
pub async fn page(
    State(state): State<AppState>,
    Owner(session): Owner,
    headers: HeaderMap,
) -> Result<Response> {
    let now = state.now();
    let rows = backchannel::pending_for_user(&state.db, &session.user_id, now).await?;
    let mut requests = Vec::with_capacity(rows.len());
    for row in &rows {
        requests.push(view(&state, row, now).await?);
    }
    let has_passkey =
        crate::store::passkeys::count_for_user(&state.db, &session.user_id).await? > 0;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let csrf = pages::csrf(&state, &headers)?;
    let page = pages::render_with_script(
        &state,
        StatusCode::OK,
        "approvals.html",
        json!({
            "requests": requests, "has_passkey": has_passkey, "ids": ids.join(","),
            "csrf_token": csrf.token,
        }),
    )?;
    Ok(pages::with_cookies(page, [csrf.set_cookie]))
}

/// How often an open page's stream reads the list again without a
/// wake-up (expiry, and a NOTIFY that failed to be sent).
const REREAD: Duration = Duration::from_secs(15);

/// `GET /account/approvals/events`.
pub async fn events(
    State(state): State<AppState>,
    Owner(session): Owner,
    ip: ClientIp,
) -> Result<Response> {
    let key = crate::approvals::hub_key(&session.user_id);
    let slot = super::login_requests::StreamSlot::take(&state, ip.0, &key)?;
    let waker = state.agents.login_hub.waker(&key);
    let user = session.user_id;
    let stream = futures_util::stream::unfold(
        (state, user, waker, slot, None::<String>),
        |(state, user, waker, slot, last)| async move {
            loop {
                let mut notified = Box::pin(waker.notified());
                notified.as_mut().enable();
                let now = state.now();
                match backchannel::pending_for_user(&state.db, &user, now).await {
                    Ok(rows) => {
                        let ids = rows
                            .iter()
                            .map(|r| r.id.as_str())
                            .collect::<Vec<_>>()
                            .join(",");
                        if last.as_deref() != Some(ids.as_str()) {
                            drop(notified);
                            let event = Event::default().event("pending").data(ids.clone());
                            return Some((
                                Ok::<_, Infallible>(event),
                                (state, user, waker, slot, Some(ids)),
                            ));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading pending approvals failed"),
                }
                tokio::select! {
                    _ = state.agents.login_hub.closed() => return None,
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(REREAD) => {}
                }
            }
        },
    );
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// The pending request `id` of the signed-in owner.
async fn pending(state: &AppStateInner, user_id: &str, id: &str) -> Result<BackchannelRow> {
    backchannel::get(&state.db, id)
        .await?
        .filter(|r| r.user_id.as_deref() == Some(user_id))
        .filter(|r| r.status == backchannel::PENDING && r.expires_at > state.now())
        .ok_or_else(|| {
            OAuthError::new(
                404,
                "not_found",
                "no such pending request (it may have been answered or have expired)",
            )
            .into()
        })
}

/// `POST /account/approvals/{id}/options`: assertion options bound to
/// the request, naming the owner's passkeys.
pub async fn options(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let session = passkeys::signed_in(&state, &headers, &form).await?;
    pending(&state, &session.user_id, &id).await?;
    let allow: Vec<Vec<u8>> = crate::store::passkeys::for_user(&state.db, &session.user_id)
        .await?
        .into_iter()
        .map(|p| p.credential_id)
        .collect();
    if allow.is_empty() {
        return Err(refuse(
            400,
            "you have no passkey; approve with your password",
        ));
    }
    let (challenge, cookie) = passkeys::begin_bound(
        &state,
        APPROVE,
        Some(session.user_id.clone()),
        Some(bound(&id)),
    )
    .await?;
    let options = passkeys::relying_party(&state)?.request_options(&challenge, &allow);
    Ok(json_with(json!({ "publicKey": options }), vec![cookie]))
}

/// `POST /account/approvals/{id}/approve`: a passkey assertion (JSON
/// answer, for the script) or the password (a form, answered by a
/// redirect back to the list).
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let session = passkeys::signed_in(&state, &headers, &form).await?;
    let row = pending(&state, &session.user_id, &id).await?;
    let has_passkey =
        crate::store::passkeys::count_for_user(&state.db, &session.user_id).await? > 0;
    let by_passkey = form.get("credential_id").is_some();
    let method = match (by_passkey, has_passkey) {
        (true, _) => {
            let (user, passkey) =
                passkeys::verify_assertion_for(&state, &headers, &form, APPROVE, Some(bound(&id)))
                    .await?;
            if user != session.user_id {
                return Err(refuse(403, "this passkey is not yours"));
            }
            json!({ "method": "passkey", "passkey": passkey })
        }
        (false, true) => {
            return Err(refuse(
                400,
                "you have a passkey: approve with it (the password is not enough)",
            ));
        }
        (false, false) => {
            check_password(&state, &session.user_id, form.get("password")).await?;
            json!({ "method": "password" })
        }
    };
    decide(&state, &session.user_id, &row, APPROVED, method, &ip).await?;
    let back = "/account/approvals";
    match by_passkey {
        true => Ok(json_with(
            json!({ "redirect": back }),
            vec![passkeys::clear_ceremony(&state)],
        )),
        false => Ok(pages::see_other(back)),
    }
}

/// The owner's password, with the failure budget of sign-in.
async fn check_password(
    state: &AppStateInner,
    user_id: &str,
    password: Option<&str>,
) -> Result<()> {
    let key = format!("approve:{user_id}");
    if state
        .login_failures
        .get(&key)
        .await
        .is_some_and(|n| n >= FAILURES_PER_OWNER)
    {
        let mut e = OAuthError::new(429, "slow_down", "too many wrong passwords; wait a minute");
        e.retry_after = Some(60);
        return Err(e.into());
    }
    let stored = crate::store::users::by_id(&state.db, user_id)
        .await?
        .map(|u| u.password_hash);
    let ok = match password {
        Some(p) if !p.is_empty() => crate::accounts::verify_password(stored, p.to_string()).await,
        _ => false,
    };
    if !ok {
        state
            .login_failures
            .entry(key)
            .and_upsert_with(|n| async move { n.map_or(1, |e| e.into_value().saturating_add(1)) })
            .await;
        return Err(refuse(401, "the password is wrong"));
    }
    Ok(())
}

/// `POST /account/approvals/{id}/deny`.
pub async fn deny(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Owner(session): Owner,
    ip: ClientIp,
    CheckedForm(_): CheckedForm,
) -> Result<Response> {
    let row = pending(&state, &session.user_id, &id).await?;
    decide(&state, &session.user_id, &row, DENIED, json!({}), &ip).await?;
    Ok(pages::see_other("/account/approvals"))
}

/// Records the owner's answer once, audits it, wakes the owner's other
/// pages and pings a ping-mode client.
async fn decide(
    state: &AppState,
    user_id: &str,
    row: &BackchannelRow,
    status: &'static str,
    how: serde_json::Value,
    ip: &ClientIp,
) -> Result<()> {
    let now = state.now();
    if !backchannel::resolve(&state.db, &row.id, user_id, status, now).await? {
        return Err(OAuthError::new(
            409,
            "conflict",
            "the request was answered elsewhere or expired a moment ago",
        )
        .into());
    }
    state.audit.record(AuditEvent {
        at: now,
        event: if status == APPROVED {
            "backchannel.approved"
        } else {
            "backchannel.denied"
        },
        client_id: Some(row.client_id.clone()),
        subject: Some(user_id.to_string()),
        ip: ip.to_audit(),
        detail: json!({ "request": row.id, "agent_id": row.agent_id, "scope": row.scope,
                        "binding_message": row.binding_message,
                        "authorization_details": row.authorization_details.as_deref()
                            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()),
                        "verified_by": how }),
    });
    crate::approvals::announce(&state.agents, user_id).await;
    state.approvals.ping(state.db.clone(), row.clone(), now);
    Ok(())
}
