//! Operator pages (issue 17 item 4), for accounts marked admin
//! (`agentauth user create --admin`): clients, signing keys and CA
//! epochs (read-only), the audit log with filters, and the security
//! event receivers (list, add, remove; issue 31). No secret is ever
//! shown: client records carry only hashes, a receiver's authorization
//! value is sealed and the page says only whether there is one. Anyone
//! else gets 403.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::ClientIp;
use super::pages;
use super::signed_in::{CheckedForm, Operator};
use crate::crypto::{b64url, sha256};
use crate::error::{OAuthError, Result};
use crate::state::AppState;
use crate::store;

/// Rows per page.
const PAGE: u64 = 50;

#[derive(Deserialize)]
pub struct ClientsQuery {
    after: Option<String>,
}

/// `GET /admin/clients`.
pub async fn clients(
    State(state): State<AppState>,
    _: Operator,
    Query(q): Query<ClientsQuery>,
) -> Result<Response> {
    let rows = store::clients::page(&state.db, q.after.as_deref(), PAGE).await?;
    let next = (rows.len() as u64 == PAGE)
        .then(|| {
            rows.last().map(|c| {
                form_urlencoded::byte_serialize(c.client_id.as_bytes()).collect::<String>()
            })
        })
        .flatten();
    let clients: Vec<_> = rows
        .iter()
        .map(|c| {
            json!({
                "client_id": c.client_id, "name": c.metadata.client_name,
                "kind": c.kind.as_str(), "grant_types": c.metadata.grant_types,
                "auth": c.metadata.token_endpoint_auth_method.as_str(),
                "issued_at": c.client_id_issued_at,
            })
        })
        .collect();
    pages::render(
        &state,
        StatusCode::OK,
        "admin.html",
        json!({ "section": "clients", "clients": clients, "next": next }),
    )
}

/// `GET /admin/keys`: signing keys and CA epochs, public parts only.
pub async fn keys(State(state): State<AppState>, _: Operator) -> Result<Response> {
    let keys: Vec<_> = store::keys::list(&state.db)
        .await?
        .into_iter()
        .map(|k| json!({ "kid": k.kid, "alg": k.alg, "activates_at": k.activates_at, "retire_after": k.retire_after }))
        .collect();
    let epochs: Vec<_> = store::bridge::epochs(&state.db)
        .await?
        .into_iter()
        .rev()
        .map(|e| {
            json!({
                "epoch": e.epoch, "started_at": e.started_at, "not_after": e.not_after,
                "dropped_at": e.dropped_at, "sha256": b64url(&sha256(&e.certificate_der)),
            })
        })
        .collect();
    pages::render(
        &state,
        StatusCode::OK,
        "admin.html",
        json!({ "section": "keys", "keys": keys, "epochs": epochs }),
    )
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    actor: Option<String>,
    client: Option<String>,
    agent: Option<String>,
    event: Option<String>,
    before: Option<String>,
}

/// `GET /admin/audit?actor=&client=&agent=&event=&before=`.
pub async fn audit(
    State(state): State<AppState>,
    _: Operator,
    Query(q): Query<AuditQuery>,
) -> Result<Response> {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let filter = store::audit::Filter {
        actor: given(&q.actor),
        client_id: given(&q.client),
        agent: given(&q.agent),
        event: given(&q.event),
        before: match given(&q.before) {
            None => None,
            Some(b) => Some(b.parse().map_err(|_| {
                OAuthError::new(400, "invalid_request", "before must be an event number")
            })?),
        },
    };
    let rows = store::audit::search(&state.db, &filter, PAGE).await?;
    let next = (rows.len() as u64 == PAGE)
        .then(|| rows.last().map(|e| e.id))
        .flatten()
        .map(|id| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in [
                ("actor", &filter.actor),
                ("client", &filter.client_id),
                ("agent", &filter.agent),
                ("event", &filter.event),
            ] {
                if let Some(v) = v {
                    query.append_pair(k, v);
                }
            }
            query.append_pair("before", &id.to_string());
            format!("/admin/audit?{}", query.finish())
        });
    let events: Vec<_> = rows
        .into_iter()
        .map(|e| json!({ "at": e.at, "event": e.event, "client_id": e.client_id, "subject": e.subject, "ip": e.ip }))
        .collect();
    pages::render(
        &state,
        StatusCode::OK,
        "admin.html",
        json!({
            "section": "audit", "events": events, "next": next,
            "filter": { "actor": filter.actor, "client": filter.client_id, "agent": filter.agent, "event": filter.event },
        }),
    )
}

/// `GET /admin/clients/{id}`: the connection doctor's page of one client:
/// its registration and its recent authorization steps, newest first,
/// each refusal with its reason and what would fix it.
pub async fn client(
    State(state): State<AppState>,
    _: Operator,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response> {
    let Some(record) = state.clients.get(&id).await? else {
        return Err(OAuthError::new(404, "not_found", "no such client").into());
    };
    let steps: Vec<_> = store::traces::recent(&state.db, &id, crate::doctor::KEEP_PER_CLIENT)
        .await?
        .into_iter()
        .map(|t| {
            json!({
                "at": crate::clock::utc(t.at), "attempt": t.attempt, "step": t.step,
                "refused": t.outcome == "refused", "reason": t.reason, "fix": t.fix,
            })
        })
        .collect();
    let m = &record.metadata;
    pages::render(
        &state,
        StatusCode::OK,
        "admin.html",
        json!({
            "section": "client",
            "client": {
                "client_id": record.client_id, "name": m.client_name, "kind": record.kind.as_str(),
                "grant_types": m.grant_types, "auth": m.token_endpoint_auth_method.as_str(),
                "redirect_uris": m.redirect_uris, "scope": m.scope().to_string(),
            },
            "steps": steps,
        }),
    )
}

/// `GET /admin/receivers`: the security event receivers, each with what
/// waits for it, what failed, what was dropped, and its last error.
pub async fn receivers(
    State(state): State<AppState>,
    _: Operator,
    headers: HeaderMap,
) -> Result<Response> {
    receivers_page(&state, &headers, StatusCode::OK, None, None).await
}

async fn receivers_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
    form: Option<serde_json::Value>,
) -> Result<Response> {
    let receivers: Vec<_> = store::events::receivers(&state.db)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "id": r.row.id, "endpoint_url": r.row.endpoint_url, "aud": r.row.audience,
                "authorization": r.row.authorization_sealed.is_some(),
                "pending": r.pending, "failed": r.failed, "dropped": r.row.dropped,
                "delivered": r.row.delivered,
                "last_error": r.row.last_error,
                "last_error_at": r.row.last_error_at.map(crate::clock::utc),
                "last_delivered_at": r.row.last_delivered_at.map(crate::clock::utc),
            })
        })
        .collect();
    let csrf = pages::csrf(state, headers)?;
    let page = pages::render(
        state,
        status,
        "admin.html",
        json!({
            "section": "receivers", "receivers": receivers, "csrf_token": csrf.token,
            "error": error, "form": form.unwrap_or_else(|| json!({})),
            "max_queued": store::events::MAX_QUEUED_PER_RECEIVER,
        }),
    )?;
    Ok(pages::with_cookies(page, [csrf.set_cookie]))
}

/// `POST /admin/receivers`: registers a receiver; bad input re-renders
/// the page with the reason (400), the authorization value never echoed.
pub async fn add_receiver(
    State(state): State<AppState>,
    Operator(session): Operator,
    ip: ClientIp,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm,
) -> Result<Response> {
    let field = |name: &str| form.get(name).unwrap_or_default().to_string();
    let request = crate::events::receivers::NewReceiverRequest {
        endpoint_url: field("endpoint_url"),
        audience: field("aud"),
        authorization: Some(field("authorization")),
    };
    match crate::events::receivers::add(
        &state.db,
        &state.events.seal_key,
        state.config.insecure_fetch,
        request,
        state.now(),
        &session.user_id,
        ip.to_audit(),
    )
    .await
    {
        Ok(_) => Ok(pages::see_other("/admin/receivers")),
        Err(crate::events::receivers::ReceiverError::Invalid(why)) => {
            receivers_page(
                &state,
                &headers,
                StatusCode::BAD_REQUEST,
                Some(&why),
                Some(json!({ "endpoint_url": field("endpoint_url"), "aud": field("aud") })),
            )
            .await
        }
        Err(crate::events::receivers::ReceiverError::Store(e)) => Err(e.into()),
        Err(crate::events::receivers::ReceiverError::Random(e)) => Err(e.into()),
    }
}

/// `POST /admin/receivers/{id}/delete`: removes a receiver and its queue.
pub async fn remove_receiver(
    State(state): State<AppState>,
    Operator(session): Operator,
    ip: ClientIp,
    Path(id): Path<String>,
    CheckedForm(_): CheckedForm,
) -> Result<Response> {
    let removed = crate::events::receivers::remove(
        &state.db,
        &id,
        state.now(),
        &session.user_id,
        ip.to_audit(),
    )
    .await
    .map_err(|e| match e {
        crate::events::receivers::ReceiverError::Store(e) => crate::error::Error::from(e),
        other => crate::error::Error::Internal(other.to_string()),
    })?;
    if !removed {
        return Err(OAuthError::new(404, "not_found", "no such receiver").into());
    }
    Ok(pages::see_other("/admin/receivers"))
}
