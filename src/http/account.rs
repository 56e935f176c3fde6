//! Login, logout and the owner's account page.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::pages;
use super::signed_in::{CheckedForm, Owner};
use super::{ClientIp, OAuthForm};
use crate::accounts;
use crate::error::{OAuthError, Result};
use crate::state::{AppState, State as AppStateInner};
use crate::store::{self, audit::AuditEvent};

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
    /// Set when a credential change sent the owner here to sign in again.
    reauth: Option<String>,
}

/// How recent a sign-in (the session's `auth_time`, OpenID Connect Core
/// §2) must be for a credential change: adding a passkey, deleting the
/// password, adding a key to an agent. A session lives 12 h; a stolen or
/// unattended one must not be enough to add a way in (SECURITY.md,
/// Recent authentication).
pub const RECENT_SIGN_IN: i64 = 5 * 60;

/// Whether `session` signed in within [`RECENT_SIGN_IN`].
pub(super) fn signed_in_recently(state: &AppStateInner, session: &pages::Session) -> bool {
    state.now().saturating_sub(session.auth_time) <= RECENT_SIGN_IN
}

/// The login page, asking to sign in again and then return to `here`.
pub(super) fn sign_in_again_url(here: &str) -> String {
    format!(
        "/login?return_to={}&reauth=1",
        form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
    )
}

/// 303 to [`sign_in_again_url`]: a page's form posted with a stale sign-in.
pub(super) fn sign_in_again(here: &str) -> Response {
    pages::see_other(&sign_in_again_url(here))
}

/// Why the owner is asked to sign in again, in words (the page, and the
/// passkey script's `error_description`).
pub(super) fn recent_sign_in_needed(change: &str) -> String {
    format!(
        "{change} needs a sign-in within the last {} minutes",
        RECENT_SIGN_IN / 60
    )
}

/// Only our own pages may be returned to (no open redirect).
pub(super) fn safe_return_to(value: Option<&str>) -> String {
    match value {
        Some(v)
            if (v.starts_with("/authorize?")
                || v == "/account"
                || v.starts_with("/account/")
                || v.starts_with("/admin/"))
                && !v.contains("//")
                && !v.contains('\\') =>
        {
            v.to_string()
        }
        _ => "/account".to_string(),
    }
}

/// The login or sign-up form (`template`), with a CSRF token and the page
/// to return to.
fn form_page(
    state: &AppStateInner,
    headers: &HeaderMap,
    template: &str,
    return_to: &str,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response> {
    let csrf = pages::csrf(state, headers)?;
    let page = pages::render_with_script(
        state,
        status,
        template,
        json!({
            "csrf_token": csrf.token, "return_to": return_to, "username": username, "error": error,
            "signup": state.config.signup, "return_to_q": encode(return_to),
        }),
    )?;
    Ok(pages::with_cookies(page, [csrf.set_cookie]))
}

fn login_page(
    state: &AppStateInner,
    headers: &HeaderMap,
    return_to: &str,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response> {
    form_page(
        state,
        headers,
        "login.html",
        return_to,
        username,
        error,
        status,
    )
}

pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response> {
    let username = match q.reauth {
        Some(_) => pages::session(&state, &headers)
            .await?
            .map(|s| s.username)
            .unwrap_or_default(),
        None => String::new(),
    };
    login_page(
        &state,
        &headers,
        &safe_return_to(q.return_to.as_deref()),
        &username,
        q.reauth
            .is_some()
            .then(|| {
                format!(
                    "Sign in again to continue: {}.",
                    recent_sign_in_needed("this change")
                )
            })
            .as_deref(),
        StatusCode::OK,
    )
}

/// Failed sign-ins per username, and per client address, after which
/// further attempts wait until a minute has passed since the last failure.
const LOGIN_FAILURES_PER_USER: u32 = 5;
const LOGIN_FAILURES_PER_IP: u32 = 30;

/// `POST /login`: CSRF, throttling of failures per account and per IP,
/// argon2id, then a brand-new session (rotated at login).
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form.unwrap_or_default();
    let return_to = safe_return_to(form.get("return_to"));
    let username = form.get("username").unwrap_or_default().to_string();
    if !pages::csrf_ok(&state, &headers, form.get("csrf_token")) {
        return login_page(
            &state,
            &headers,
            &return_to,
            &username,
            Some("The form expired. Please try again."),
            StatusCode::BAD_REQUEST,
        );
    }
    // Failed attempts count, successful ones do not (issue 12 item 15):
    // a user who signs in often is never throttled, a guesser is.
    let user_key = format!("user:{}", username.to_lowercase());
    let ip_key = ip.0.map(|addr| format!("ip:{addr}"));
    let throttled = state
        .login_failures
        .get(&user_key)
        .await
        .is_some_and(|n| n >= LOGIN_FAILURES_PER_USER)
        || match &ip_key {
            Some(k) => state
                .login_failures
                .get(k)
                .await
                .is_some_and(|n| n >= LOGIN_FAILURES_PER_IP),
            None => false,
        };
    if throttled {
        return login_page(
            &state,
            &headers,
            &return_to,
            &username,
            Some("Too many attempts. Wait a minute and try again."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let user = store::users::by_username(&state.db, &username).await?;
    let password = form.get("password").unwrap_or_default().to_string();
    let ok =
        accounts::verify_password(user.as_ref().map(|u| u.password_hash.clone()), password).await;
    let Some(user) = user.filter(|_| ok) else {
        for key in std::iter::once(user_key).chain(ip_key) {
            state
                .login_failures
                .entry(key)
                .and_upsert_with(
                    |n| async move { n.map_or(1, |e| e.into_value().saturating_add(1)) },
                )
                .await;
        }
        return login_page(
            &state,
            &headers,
            &return_to,
            &username,
            Some("Wrong username or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    // A previous session cookie (possibly planted) is dropped, not reused.
    if let Some(old) = pages::cookie(&headers, &pages::cookie_name(&state, pages::SESSION_COOKIE)) {
        store::users::delete_session(&state.db, crate::crypto::sha256(old.as_bytes())).await?;
    }
    let cookie = pages::start_session(&state, &user.id).await?;
    state.audit.record(AuditEvent {
        at: state.now(),
        event: "user.login",
        client_id: None,
        subject: Some(user.id.clone()),
        ip: ip.to_audit(),
        detail: json!({}),
    });
    Ok(pages::with_cookies(pages::see_other(&return_to), [cookie]))
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form.unwrap_or_default();
    if !pages::csrf_ok(&state, &headers, form.get("csrf_token")) {
        return Ok(pages::see_other("/account"));
    }
    if let Some(session) = pages::session(&state, &headers).await? {
        store::users::delete_session(&state.db, session.id_hash).await?;
    }
    let clear = pages::set_cookie(&state, pages::SESSION_COOKIE, "", 0, cookie::SameSite::Lax);
    Ok(pages::with_cookies(pages::see_other("/login"), [clear]))
}

/// `GET /account`: the consents and refresh-token grants the user gave.
pub async fn account(
    State(state): State<AppState>,
    Owner(session): Owner,
    headers: HeaderMap,
) -> Result<Response> {
    let mut consents = Vec::new();
    for c in store::grants::user_consents(&state.db, &session.user_id).await? {
        let name = state
            .clients
            .get(&c.client_id)
            .await?
            .and_then(|r| r.metadata.client_name.clone())
            .unwrap_or_else(|| c.client_id.clone());
        consents.push(json!({ "client_id": c.client_id, "client_name": name, "scope": c.scope }));
    }
    let grants: Vec<_> = store::grants::user_families(&state.db, &session.user_id, state.now())
        .await?
        .into_iter()
        .map(|g| json!({ "client_id": g.client_id, "scope": g.scope, "family_id": g.family_id }))
        .collect();
    let mut delegations = Vec::new();
    for d in store::delegations::live_for_owner(&state.db, &session.user_id, state.now()).await? {
        let agent_name = |id: &str| {
            let id = id.to_string();
            let state = &state;
            async move {
                Ok::<_, crate::error::Error>(
                    store::agents::get(&state.db, &id)
                        .await?
                        .map_or(id, |a| a.name),
                )
            }
        };
        let for_whom = if d.subject == session.user_id {
            "you".to_string()
        } else {
            agent_name(&d.subject).await?
        };
        // Another owner's agent acting with this user's token (SECURITY.md,
        // "Delegations"): shown, revocable, but not linked (its page is
        // its owner's).
        let mine = d.owner_id == session.user_id;
        delegations.push(json!({
            "jti": d.jti, "agent": agent_name(&d.agent_id).await?, "agent_id": d.agent_id,
            "mine": mine,
            "for": for_whom, "actors": d.actors, "resource": d.resource, "scope": d.scope,
            "expires_in": (d.expires_at - state.now()).max(0),
        }));
    }
    let waiting =
        store::backchannel::open_for_user(&state.db, &session.user_id, state.now()).await?;
    let csrf = pages::csrf(&state, &headers)?;
    let page = pages::render(
        &state,
        StatusCode::OK,
        "account.html",
        json!({
            "username": session.username, "consents": consents, "grants": grants,
            "delegations": delegations, "csrf_token": csrf.token, "admin": session.admin,
            "waiting": waiting,
        }),
    )?;
    Ok(pages::with_cookies(page, [csrf.set_cookie]))
}

/// `POST /account/revoke`: one click removes a consent (and the refresh
/// tokens of that client), one refresh-token family, or one delegation.
pub async fn revoke(
    State(state): State<AppState>,
    Owner(session): Owner,
    ip: ClientIp,
    CheckedForm(form): CheckedForm,
) -> Result<Response> {
    let now = state.now();
    let id = form.get("id").unwrap_or_default();
    if form.get("kind") == Some("delegation") {
        // The token's jti joins the revocation list; only the owner's own.
        let audit = AuditEvent {
            at: now,
            event: "delegation.revoked",
            client_id: None,
            subject: Some(session.user_id.clone()),
            ip: ip.to_audit(),
            detail: json!({ "jti": id }),
        };
        if store::delegations::revoke(&state.db, &session.user_id, id, now, audit).await? {
            state.tokens.revoked();
        }
        return Ok(pages::see_other("/account"));
    }
    match form.get("kind") {
        Some("consent") => {
            // Only a consent that exists: the withdrawal is audited and
            // pushed to event receivers (SETs) in its own transaction.
            if store::grants::consent(&state.db, &session.user_id, id)
                .await?
                .is_some()
            {
                let event = AuditEvent {
                    at: now,
                    event: "consent.withdrawn",
                    client_id: Some(id.to_string()),
                    subject: Some(session.user_id.clone()),
                    ip: ip.to_audit(),
                    detail: json!({}),
                };
                store::grants::withdraw_consent(&state.db, &session.user_id, id, now, event)
                    .await?;
                state.tokens.revoked();
                state.events.wake();
            }
            return Ok(pages::see_other("/account"));
        }
        Some("grant") => {
            // Only the user's own families.
            let families = store::grants::user_families(&state.db, &session.user_id, now).await?;
            if families.iter().any(|g| g.family_id == id) {
                store::grants::revoke_family(&state.db, id, now).await?;
            }
        }
        _ => {}
    }
    state.tokens.revoked();
    state.audit.record(AuditEvent {
        at: now,
        event: "grant.revoked_by_owner",
        client_id: None,
        subject: Some(session.user_id.clone()),
        ip: ip.to_audit(),
        detail: json!({ "kind": form.get("kind"), "id": id }),
    });
    Ok(pages::see_other("/account"))
}

fn signup_page(
    state: &AppStateInner,
    headers: &HeaderMap,
    return_to: &str,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response> {
    form_page(
        state,
        headers,
        "signup.html",
        return_to,
        username,
        error,
        status,
    )
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `GET /signup`, when self sign-up is on.
pub async fn signup_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response> {
    if !state.config.signup {
        return Err(OAuthError::new(404, "not_found", "self sign-up is off").into());
    }
    signup_page(
        &state,
        &headers,
        &safe_return_to(q.return_to.as_deref()),
        "",
        None,
        StatusCode::OK,
    )
}

/// `POST /signup`: CSRF, per-IP throttling, then a new account and session.
pub async fn signup(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    if !state.config.signup {
        return Err(OAuthError::new(404, "not_found", "self sign-up is off").into());
    }
    let form = form.unwrap_or_default();
    let return_to = safe_return_to(form.get("return_to"));
    let username = form.get("username").unwrap_or_default().to_string();
    if !pages::csrf_ok(&state, &headers, form.get("csrf_token")) {
        return signup_page(
            &state,
            &headers,
            &return_to,
            &username,
            Some("The form expired. Please try again."),
            StatusCode::BAD_REQUEST,
        );
    }
    if ip
        .0
        .is_some_and(|addr| state.login_by_ip.check_key(&addr).is_err())
    {
        return signup_page(
            &state,
            &headers,
            &return_to,
            &username,
            Some("Too many attempts. Wait a minute and try again."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let password = form.get("password").unwrap_or_default().to_string();
    let user = match accounts::create_user(&state.db, &username, password, state.now()).await {
        Ok(u) => u,
        Err(accounts::AccountError::Store(e)) => return Err(e.into()),
        Err(accounts::AccountError::Hash) => {
            return Err(crate::error::Error::Internal(
                "password hashing failed".into(),
            ));
        }
        Err(e) => {
            return signup_page(
                &state,
                &headers,
                &return_to,
                &username,
                Some(&e.to_string()),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let cookie = pages::start_session(&state, &user.id).await?;
    state.audit.record(AuditEvent {
        at: state.now(),
        event: "user.signup",
        client_id: None,
        subject: Some(user.id.clone()),
        ip: ip.to_audit(),
        detail: json!({}),
    });
    Ok(pages::with_cookies(pages::see_other(&return_to), [cookie]))
}
