//! `POST /bc-authorize`: the backchannel authentication endpoint (OpenID
//! CIBA Core §7). A confidential client registered for the CIBA grant (an
//! agent, or a client its owner signed in to before) asks an owner,
//! named by `login_hint` (a user name), to approve `scope` and RFC 9396
//! `authorization_details`; the answer is an `auth_req_id` to redeem at
//! the token endpoint (poll) or when notified (ping).
//!
//! Who may be asked: an agent asks only its owner; any other client only
//! a user who consented to it before. A hint that names anyone else, or
//! nobody, gets the same answer as one that names the owner: a request
//! that nobody sees and that only expires (no account probing; CIBA
//! Core's `unknown_user_id` is never sent). Pending requests are capped
//! per client and per owner, and creations are rate limited per client.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::{ClientIp, OAuthForm, json_no_store};
use crate::clients::Public;
use crate::crypto::{random_id, random_token, sha256};
use crate::error::{OAuthError, Result};
use crate::grants::{self, target_scope};
use crate::oauth::client_metadata::DeliveryMode;
use crate::oauth::grant_type::CIBA;
use crate::resources::DpopRule;
use crate::state::AppState;
use crate::store::audit::AuditEvent;
use crate::store::backchannel::{self, NewRequest};

/// Longest `binding_message`, in characters: a person reads it on the
/// approval page and compares it with what the agent shows.
pub const MAX_BINDING_MESSAGE: usize = 100;

/// CIBA Core §7.1 `binding_message`: short, one line, printable, and no
/// characters that reorder or hide text (bidirectional controls,
/// zero-width marks), since a person compares it with another screen.
pub fn check_binding_message(text: &str) -> std::result::Result<(), OAuthError> {
    let bad = |why: &str| OAuthError::invalid_binding_message(format!("binding_message {why}"));
    if text.trim().is_empty() {
        return Err(bad("is empty"));
    }
    if text.chars().count() > MAX_BINDING_MESSAGE {
        return Err(bad(&format!(
            "is longer than {MAX_BINDING_MESSAGE} characters"
        )));
    }
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    };
    if text.chars().any(hidden) {
        return Err(bad("holds control, formatting or invisible characters"));
    }
    Ok(())
}

/// RFC 6750 §2.1 `b64token`: what a bearer credential may be.
fn is_b64token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 1024
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
}

pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let client = super::authenticate_client(&state, &headers, &form, Public::Refused, &ip).await?;
    let record = &client.client;
    let is_agent = record.kind.is_agent();
    if !is_agent && !record.metadata.allows_grant(CIBA) {
        return Err(OAuthError::unauthorized_client(format!(
            "the client is not registered for the {CIBA} grant"
        ))
        .into());
    }
    let client_id = client.client_id().to_string();
    super::login_requests::within_rate(&state, format!("ciba:{client_id}"))?;

    // §7.1: exactly one hint; we take `login_hint`, a user name.
    for unsupported in ["login_hint_token", "id_token_hint"] {
        if form.get(unsupported).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "{unsupported} is not supported; name the user with login_hint"
            ))
            .into());
        }
    }
    for unsupported in ["request", "user_code"] {
        if form.get(unsupported).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "{unsupported} is not supported at this server"
            ))
            .into());
        }
    }
    let hint = form.require("login_hint")?;
    if hint.len() > 256 {
        return Err(OAuthError::invalid_request("login_hint is too long").into());
    }
    let binding_message = form.get("binding_message");
    if let Some(text) = binding_message {
        check_binding_message(text)?;
    }
    let ping = record.metadata.backchannel_token_delivery_mode == Some(DeliveryMode::Ping);
    let notification_token = form.get("client_notification_token");
    match (ping, notification_token) {
        (true, None) => {
            return Err(OAuthError::invalid_request(
                "a ping-mode client sends client_notification_token",
            )
            .into());
        }
        (true, Some(t)) if !is_b64token(t) => {
            return Err(OAuthError::invalid_request(
                "client_notification_token must be a bearer token (RFC 6750 b64token, at most 1024 characters)",
            )
            .into());
        }
        _ => {}
    }
    let now = state.now();
    let expiry = match form.get("requested_expiry") {
        None => state.config.ciba_expiry,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => n.min(state.config.ciba_expiry),
            _ => {
                return Err(OAuthError::invalid_request(
                    "requested_expiry must be a positive integer of seconds",
                )
                .into());
            }
        },
    };

    // What is asked for: RFC 9396 details (their locations are resources
    // too), RFC 8707 resources, and a scope within the client's.
    let registry = &state.resources.registry;
    let details = form
        .get("authorization_details")
        .map(|text| registry.check_details(text))
        .transpose()?;
    let requested =
        crate::resources::with_locations(grants::resources(&form)?, details.as_deref())?;
    let targets = registry.resolve(&requested)?;
    let agent = match is_agent {
        true => Some(grants::agent::agent_of_client(&state.agents, &client, now).await?),
        false => None,
    };
    if let Some(agent) = &agent {
        grants::agent::check_resources(agent, &targets)?;
    }
    let allowed = match &agent {
        Some(agent) => crate::oauth::scope::Scope::parse(&agent.scope).unwrap_or_default(),
        None => record.metadata.scope(),
    };
    // Approved details are the grant: with them and no `scope`, the token
    // carries no scope (least privilege), not all the client may have.
    let scope = match (&details, form.get("scope")) {
        (Some(_), None) => crate::oauth::scope::Scope::default(),
        _ => target_scope(&targets, &form, &allowed)?,
    };
    let resources = targets.uris();
    // A token for approved details is DPoP-bound: a resource that takes
    // only bearer tokens cannot receive one.
    if details.is_some()
        && let DpopRule::Refused(uri) = registry.dpop_rule(&resources)?
    {
        return Err(OAuthError::invalid_authorization_details(format!(
            "resource {uri:?} takes no DPoP-bound tokens, and approved details need one"
        ))
        .into());
    }

    // Whom the request reaches: the owner the client may ask, or nobody.
    // The same reads whether or not the hint names anyone, so that the
    // time taken does not tell either.
    let user = crate::store::users::by_username(&state.db, hint).await?;
    let user_id = user.as_ref().map_or("", |u| u.id.as_str());
    let consented = match &agent {
        Some(_) => false,
        None => crate::store::grants::consent(&state.db, user_id, &client_id)
            .await?
            .is_some(),
    };
    let asked = match (&user, &agent) {
        (Some(u), Some(agent)) if agent.owner_id == u.id => Some(u.id.clone()),
        (Some(u), None) if consented => Some(u.id.clone()),
        _ => None,
    };
    if backchannel::open_for_client(&state.db, &client_id, now).await?
        >= state.config.ciba_max_per_client
    {
        let mut e =
            OAuthError::too_many_requests(u64::try_from(state.config.ciba_interval).unwrap_or(2));
        e.description = Some("this client has too many pending backchannel requests".into());
        return Err(e.into());
    }
    if let Some(user_id) = &asked
        && backchannel::open_for_user(&state.db, user_id, now).await?
            >= state.config.ciba_max_per_owner
    {
        // The client may ask this owner, so saying so reveals nothing.
        let mut e =
            OAuthError::too_many_requests(u64::try_from(state.config.ciba_interval).unwrap_or(2));
        e.description = Some("the owner has too many pending requests; try later".into());
        return Err(e.into());
    }

    let id = random_id()?;
    let auth_req_id = random_token()?;
    let notify_sealed = match (ping, notification_token) {
        (true, Some(token)) => Some(state.approvals.seal_ping(&id, &auth_req_id, token)?),
        _ => None,
    };
    let details_json = details
        .as_ref()
        .map(|d| serde_json::Value::from(d.clone()).to_string());
    backchannel::insert(
        &state.db,
        NewRequest {
            id: id.clone(),
            req_hash: sha256(auth_req_id.as_bytes()),
            client_id: client_id.clone(),
            agent_id: agent.as_ref().map(|a| a.id.clone()),
            user_id: asked.clone(),
            scope: scope.to_string(),
            resources: serde_json::Value::from(
                resources
                    .iter()
                    .map(|r| r.as_str().to_string())
                    .collect::<Vec<_>>(),
            )
            .to_string(),
            authorization_details: details_json,
            binding_message: binding_message.map(str::to_string),
            now,
            expires_at: now + expiry,
            poll_interval: i32::try_from(state.config.ciba_interval).unwrap_or(2),
            notify_endpoint: match ping {
                true => record
                    .metadata
                    .backchannel_client_notification_endpoint
                    .clone(),
                false => None,
            },
            notify_sealed,
        },
    )
    .await?;
    state.audit.record(AuditEvent {
        at: now,
        event: "backchannel.requested",
        client_id: Some(client_id),
        subject: asked.clone(),
        ip: ip.to_audit(),
        detail: json!({ "request": id, "scope": scope.to_string(),
                        "authorization_details": details, "reaches_owner": asked.is_some() }),
    });
    if let Some(user_id) = &asked {
        crate::approvals::announce(&state.agents, user_id).await;
    }
    Ok(json_no_store(
        StatusCode::OK,
        &json!({
            "auth_req_id": auth_req_id,
            "expires_in": expiry,
            "interval": state.config.ciba_interval,
        }),
    ))
}
