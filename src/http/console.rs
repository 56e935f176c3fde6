//! The owner's console, agents part (issue 17 item 2): an owner lists
//! their agents, reads one (keys, scopes, recent activity from the audit
//! log), and disables, enables or deletes it, each through a confirmation
//! page whose form carries a CSRF token. Another owner's agent is a 403;
//! an unknown one a 404. Server-rendered, no JavaScript.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::pages::{self, Session};
use super::signed_in::{CheckedForm, Owner};
use super::{ClientIp, OAuthForm};
use crate::error::{OAuthError, Result};
use crate::oauth::client_kind::ClientKind;
use crate::state::{AppState, State as AppStateInner};
use crate::store::{self, agents::AgentRow, audit::AuditEvent};

/// Recent audit events shown per agent.
const ACTIVITY: u64 = 50;

/// The agent, when it is the signed-in owner's: 404 unknown, 403 another's.
async fn owned(state: &AppStateInner, session: &Session, id: &str) -> Result<AgentRow> {
    match store::agents::get(&state.db, id).await? {
        None => Err(OAuthError::new(404, "not_found", "no such agent").into()),
        Some(a) if a.owner_id != session.user_id => {
            Err(OAuthError::new(403, "forbidden", "this agent is not yours").into())
        }
        Some(a) => Ok(a),
    }
}

/// Agents per page of the list.
const AGENTS_PER_PAGE: u64 = 25;

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<String>,
}

/// `GET /account/agents?page=N`: name, status, keys, scopes, when each
/// last got a token and how many it got within the access-token lifetime
/// (tokens that may be live), 25 to a page.
pub async fn list(
    State(state): State<AppState>,
    Owner(session): Owner,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    let page = match q.page.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) if n <= 100_000 => n,
        Some(_) => {
            return Err(OAuthError::new(400, "invalid_request", "page must be a number").into());
        }
    };
    let (rows, more) =
        store::agents::page(&state.db, &session.user_id, page, AGENTS_PER_PAGE).await?;
    let now = state.now();
    let ids: Vec<String> = rows.iter().map(|a| a.id.clone()).collect();
    let since = now - state.config.access_token_ttl;
    let usage = store::audit::token_use(&state.db, &ids, since).await?;
    let mut agents = Vec::new();
    for a in rows {
        let keys = state
            .clients
            .get(&a.id)
            .await?
            .map_or(0, |c| c.metadata.jwks.as_ref().map_or(0, |k| k.keys.len()));
        let (last, live) = usage.get(&a.id).copied().unwrap_or((0, 0));
        agents.push(json!({
            "id": a.id, "name": a.name, "active": a.active, "scope": a.scope, "keys": keys,
            "last_used": (last > 0).then(|| ago(now - last)),
            "live": if a.active { live } else { 0 },
        }));
    }
    pages::render(
        &state,
        StatusCode::OK,
        "agents.html",
        json!({
            "agents": agents,
            "prev": page.checked_sub(1),
            "next": more.then_some(page + 1),
        }),
    )
}

/// "5 min ago", for people.
fn ago(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 60 => "just now".into(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// `GET /account/agents/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Owner(session): Owner,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let agent = owned(&state, &session, &id).await?;
    let client = state.clients.get(&agent.id).await?;
    let kind = client.as_ref().map_or(ClientKind::OwnerAgent, |c| c.kind);
    let keys: Vec<_> = client
        .and_then(|c| c.metadata.jwks.clone())
        .map(|set| set.keys)
        .unwrap_or_default()
        .iter()
        .map(|k| {
            let value = serde_json::to_value(k).unwrap_or_default();
            let kind = [value["kty"].as_str(), value["crv"].as_str()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            json!({
                "kid": k.common.key_id,
                "kind": kind,
                "thumbprint": agentauth_resource::jwk::thumbprint(k).unwrap_or_default(),
            })
        })
        .collect();
    let events: Vec<_> = store::audit::about(&state.db, &agent.id, ACTIVITY)
        .await?
        .into_iter()
        .map(|e| json!({ "at": e.at, "event": e.event, "ip": e.ip }))
        .collect();
    let csrf = pages::csrf(&state, &headers)?;
    let page = pages::render(
        &state,
        StatusCode::OK,
        "agent.html",
        json!({
            "csrf_token": csrf.token,
            "agent": {
                "id": agent.id, "name": agent.name, "active": agent.active, "scope": agent.scope,
                "resources": agent.resources, "disabled_at": agent.disabled_at,
                "vouched": kind == ClientKind::Agent,
                "unattended": unattended(&state, kind, &agent.resources),
            },
            "keys": keys,
            "events": events,
        }),
    )?;
    Ok(pages::with_cookies(page, [csrf.set_cookie]))
}

fn agent_error(e: crate::agents::AgentError) -> crate::error::Error {
    use crate::agents::AgentError;
    match e {
        AgentError::Store(e) => e.into(),
        AgentError::Random(e) => e.into(),
        AgentError::NotFound => OAuthError::new(404, "not_found", "no such agent").into(),
        other => OAuthError::new(400, "invalid_request", other.to_string()).into(),
    }
}

/// `GET /account/agents/new`.
pub async fn new_form(
    State(state): State<AppState>,
    _: Owner,
    headers: HeaderMap,
) -> Result<Response> {
    form_page(
        &state,
        &headers,
        &OAuthForm::default(),
        None,
        StatusCode::OK,
    )
}

fn form_page(
    state: &AppStateInner,
    headers: &HeaderMap,
    form: &OAuthForm,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response> {
    let csrf = pages::csrf(state, headers)?;
    let field = |name: &str| form.get(name).unwrap_or_default().to_string();
    let page = pages::render(
        state,
        status,
        "agent_new.html",
        json!({
            "csrf_token": csrf.token, "error": error, "name": field("name"),
            "scope": field("scope"), "resources": field("resources"), "key": field("key"),
            "registered": registered(state), "open_resources": state.resources.registry.is_open(),
        }),
    )?;
    Ok(pages::with_cookies(page, [csrf.set_cookie]))
}

/// The registered resources as the agent form shows them: what each
/// offers, and whether an agent made here may get its tokens with no
/// user (its operator lists `owner_agent`).
fn registered(state: &AppStateInner) -> Vec<serde_json::Value> {
    state
        .resources
        .registry
        .iter()
        .map(|r| {
            json!({
                "uri": r.uri, "name": r.name,
                "scopes": r.scopes.as_ref().map(ToString::to_string),
                "unattended": r.client_credentials.contains(&ClientKind::OwnerAgent),
            })
        })
        .collect()
}

/// Where an agent of `kind` limited to `resources` (empty: any) may get
/// tokens with no user (`client_credentials`), as the registry says.
fn unattended(state: &AppStateInner, kind: ClientKind, resources: &[String]) -> Vec<String> {
    let registry = &state.resources.registry;
    let default = registry.default_audience();
    let unregistered_default = registry.get(&default.uri).is_none().then_some(default);
    registry
        .iter()
        .chain(unregistered_default)
        .filter(|r| r.client_credentials.contains(&kind))
        .filter(|r| {
            resources.is_empty()
                || resources
                    .iter()
                    .any(|a| crate::resources::same_resource(a, &r.uri))
        })
        .map(|r| r.uri.clone())
        .collect()
}

/// `POST /account/agents`: a new agent owned by the signed-in user.
pub async fn create(
    State(state): State<AppState>,
    Owner(session): Owner,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm,
) -> Result<Response> {
    let refuse = |why: &str| form_page(&state, &headers, &form, Some(why), StatusCode::BAD_REQUEST);
    let key = match crate::agents::key_from_text(form.get("key").unwrap_or_default()) {
        Ok(k) => k,
        Err(why) => return refuse(&why),
    };
    let scope = match crate::oauth::scope::Scope::parse(form.get("scope").unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => return refuse(&e.to_string()),
    };
    let resources = form
        .get("resources")
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let new = crate::agents::NewAgent {
        name: form.get("name").unwrap_or_default().to_string(),
        owner_id: session.user_id.clone(),
        scope,
        resources,
        keys: jsonwebtoken::jwk::JwkSet { keys: vec![key] },
    };
    // No operator vouched for this agent: the registry bounds it, and it
    // acts with no user only where a resource's operator allowed
    // `owner_agent` (SECURITY.md, "Agents made by owners").
    match crate::agents::create_by_owner(
        &state.db,
        state.grants.as_ref(),
        &state.resources.registry,
        new,
        state.now(),
        &session.user_id,
    )
    .await
    {
        Ok((agent, _)) => Ok(pages::see_other(&format!("/account/agents/{}", agent.id))),
        Err(crate::agents::AgentError::Invalid(why)) => refuse(&why),
        Err(e) => Err(agent_error(e)),
    }
}

#[derive(Deserialize)]
pub struct ConfirmQuery {
    action: Option<String>,
}

/// `GET /account/agents/{id}/confirm?action=disable|enable|delete`: the
/// confirmation step, whose form posts the action with a CSRF token.
pub async fn confirm(
    State(state): State<AppState>,
    Owner(session): Owner,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ConfirmQuery>,
) -> Result<Response> {
    let agent = owned(&state, &session, &id).await?;
    let action = q.action.unwrap_or_default();
    // What a kill reaches, said exactly (SECURITY.md, "Kill switch"):
    // everything this server answers stops within a second; a resource or
    // site that verifies offline learns nothing until the credential
    // expires.
    let offline = format!(
        "Resources and sites that check tokens themselves, without asking this server, keep accepting what it already holds until it expires: access tokens and passports within {} minutes, bridge certificates within {} minutes.",
        (state.config.access_token_ttl.max(state.config.passport_ttl) + 59) / 60,
        (state.config.bridge_cert_ttl + 59) / 60,
    );
    let (question, consequence, button) = match action.as_str() {
        "disable" => (
            format!("Disable {}?", agent.name),
            format!(
                "At once, on every server of this service (within a second): its grants are refused, and every token, passport and delegation it holds or derived is inactive wherever this server is asked (introspection, token exchange, proof-of-work login). Enabling it again does not bring them back. {offline}"
            ),
            "Disable now",
        ),
        "enable" => (
            format!("Enable {}?", agent.name),
            "It may get new tokens with its keys. Everything it held before it was disabled stays dead.".to_string(),
            "Enable",
        ),
        "delete" => (
            format!("Delete {} for good?", agent.name),
            format!(
                "The agent, its keys and its registration are removed; everything it holds is inactive wherever this server is asked. This cannot be undone. {offline}"
            ),
            "Delete",
        ),
        _ => return Err(OAuthError::new(400, "invalid_request", "unknown action").into()),
    };
    pages::confirm(
        &state,
        &headers,
        &pages::Confirm {
            question: &question,
            consequence: &consequence,
            button,
            action_url: &format!("/account/agents/{}/{action}", agent.id),
            cancel_url: &format!("/account/agents/{}", agent.id),
        },
    )
}

/// `POST /account/agents/{id}/{action}`: the confirmed action.
pub async fn act(
    State(state): State<AppState>,
    Owner(session): Owner,
    ip: ClientIp,
    Path((id, action)): Path<(String, String)>,
    CheckedForm(form): CheckedForm,
) -> Result<Response> {
    let agent = owned(&state, &session, &id).await?;
    let now = state.now();
    let event = |name: &'static str| AuditEvent {
        at: now,
        event: name,
        client_id: Some(agent.id.clone()),
        subject: Some(session.user_id.clone()),
        ip: ip.to_audit(),
        detail: json!({ "via": "console" }),
    };
    let done = match action.as_str() {
        "disable" => {
            store::agents::set_active(&state.db, &agent.id, false, now, event("agent.disabled"))
                .await?
        }
        "enable" => {
            store::agents::set_active(&state.db, &agent.id, true, now, event("agent.enabled"))
                .await?
        }
        "delete" => store::agents::delete(&state.db, &agent.id, event("agent.deleted")).await?,
        "add-key" => {
            // A new way in for the agent: only after a recent sign-in.
            if !super::account::signed_in_recently(&state, &session) {
                return Ok(super::account::sign_in_again(&format!(
                    "/account/agents/{}",
                    agent.id
                )));
            }
            let key = crate::agents::key_from_text(form.get("key").unwrap_or_default())
                .map_err(|why| OAuthError::new(400, "invalid_request", why))?;
            let mut keys = state
                .clients
                .get(&agent.id)
                .await?
                .and_then(|c| c.metadata.jwks.clone())
                .unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() });
            if keys
                .keys
                .iter()
                .any(|k| k.common.key_id == key.common.key_id)
            {
                return Err(OAuthError::new(
                    400,
                    "invalid_request",
                    "the agent has a key with this kid",
                )
                .into());
            }
            keys.keys.push(key);
            crate::agents::set_keys(
                &state.db,
                state.grants.as_ref(),
                &agent.id,
                keys,
                now,
                &session.user_id,
            )
            .await
            .map_err(agent_error)?;
            true
        }
        _ => return Err(OAuthError::new(400, "invalid_request", "unknown action").into()),
    };
    state.forget_agent(&agent.id).await;
    // A kill, a deletion or a removed key wrote SETs for the receivers.
    state.events.wake();
    if !done {
        return Err(OAuthError::new(404, "not_found", "no such agent").into());
    }
    Ok(pages::see_other(
        if action == "delete" {
            "/account/agents".to_string()
        } else {
            format!("/account/agents/{}", agent.id)
        }
        .as_str(),
    ))
}
