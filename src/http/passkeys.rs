//! Passkeys (issue 17 item 1): an owner registers passkeys on
//! `/account/passkeys`, signs in with one at `/login` (the authorization
//! code flow's login too), removes them, and may drop the password once a
//! passkey exists. The ceremonies are driven by `static/passkeys.js`
//! against four JSON endpoints; the protocol checks are in
//! [`crate::webauthn`].
//!
//! Each ceremony's challenge is a database row (so any node can finish
//! what another started) named by a random id in a SameSite=Strict cookie,
//! and deleted when it is redeemed: a challenge answers one ceremony. The
//! JSON endpoints want the page's CSRF token like every form.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::account::{
    recent_sign_in_needed, safe_return_to, sign_in_again, sign_in_again_url, signed_in_recently,
};
use super::pages;
use super::signed_in::{CheckedForm, Owner};
use super::{ClientIp, OAuthForm};
use crate::crypto::{random_bytes, random_id, random_token, sha256};
use crate::error::{OAuthError, Result};
use crate::state::{AppState, State as AppStateInner};
use crate::store::{self, audit::AuditEvent, passkeys::Removal};
use crate::webauthn::{self, Assertion, CEREMONY_SECONDS, Registration, RelyingParty};

const CEREMONY_COOKIE: &str = "agentauth_webauthn";
const REGISTER: &str = "register";
const LOGIN: &str = "login";

/// Failed passkey sign-ins per client address before further attempts
/// wait (the password form's per-IP budget, shared with it).
const FAILURES_PER_IP: u32 = 30;

pub(super) fn refuse(
    status: u16,
    why: impl Into<std::borrow::Cow<'static, str>>,
) -> crate::error::Error {
    let code = match status {
        401 => "access_denied",
        403 => "forbidden",
        _ => "invalid_request",
    };
    OAuthError::new(status, code, why).into()
}

fn not_yours() -> crate::error::Error {
    refuse(403, "this passkey is not yours")
}

pub(super) fn relying_party(state: &AppStateInner) -> Result<RelyingParty> {
    RelyingParty::from_issuer(&state.config.issuer)
        .ok_or_else(|| crate::error::Error::Internal("the issuer has no host".into()))
}

pub(super) fn check_csrf(
    state: &AppStateInner,
    headers: &HeaderMap,
    form: &OAuthForm,
) -> Result<()> {
    if pages::csrf_ok(state, headers, form.get("csrf_token")) {
        Ok(())
    } else {
        Err(refuse(403, "the page expired; reload it and try again"))
    }
}

/// A ceremony's JSON endpoint: the signed-in owner (401 otherwise) of a
/// form whose CSRF token is this browser's (403 otherwise).
pub(super) async fn signed_in(
    state: &AppStateInner,
    headers: &HeaderMap,
    form: &OAuthForm,
) -> Result<pages::Session> {
    let session = pages::session(state, headers)
        .await?
        .ok_or_else(|| refuse(401, "sign in first"))?;
    check_csrf(state, headers, form)?;
    Ok(session)
}

pub(super) fn b64(form: &OAuthForm, name: &'static str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(form.get(name).unwrap_or_default())
        .map_err(|_| refuse(400, format!("{name} is not base64url")))
}

/// Starts a ceremony: stores its challenge and sets the cookie naming it.
pub(super) async fn begin(
    state: &AppStateInner,
    purpose: &str,
    user_id: Option<String>,
) -> Result<([u8; 32], Option<axum::http::HeaderValue>)> {
    begin_bound(state, purpose, user_id, None).await
}

/// [`begin`], with the challenge's last 16 bytes set to `bound` (what
/// the ceremony is for: the authenticator signs it with the challenge).
pub(super) async fn begin_bound(
    state: &AppStateInner,
    purpose: &str,
    user_id: Option<String>,
    bound: Option<[u8; 16]>,
) -> Result<([u8; 32], Option<axum::http::HeaderValue>)> {
    let id = random_token()?;
    let mut challenge = random_bytes::<32>()?;
    if let Some(bound) = bound {
        challenge[16..].copy_from_slice(&bound);
    }
    store::passkeys::put_challenge(
        &state.db,
        store::passkeys::ChallengeRow {
            id_hash: sha256(id.as_bytes()).to_vec(),
            purpose: purpose.to_string(),
            user_id,
            challenge: challenge.to_vec(),
            expires_at: state.now() + CEREMONY_SECONDS,
        },
    )
    .await?;
    let cookie = pages::set_cookie(
        state,
        CEREMONY_COOKIE,
        &id,
        CEREMONY_SECONDS,
        cookie::SameSite::Strict,
    );
    Ok((challenge, cookie))
}

/// Redeems the ceremony the browser's cookie names.
pub(super) async fn finish(
    state: &AppStateInner,
    headers: &HeaderMap,
    purpose: &str,
) -> Result<store::passkeys::ChallengeRow> {
    let Some(id) = pages::cookie(headers, &pages::cookie_name(state, CEREMONY_COOKIE)) else {
        return Err(refuse(400, "no passkey ceremony is under way; start again"));
    };
    store::passkeys::take_challenge(&state.db, sha256(id.as_bytes()), purpose, state.now())
        .await?
        .ok_or_else(|| refuse(400, "the passkey ceremony expired or was used; start again"))
}

pub(super) fn clear_ceremony(state: &AppStateInner) -> Option<axum::http::HeaderValue> {
    pages::set_cookie(state, CEREMONY_COOKIE, "", 0, cookie::SameSite::Strict)
}

/// A ceremony's JSON endpoint called with a stale sign-in: 401
/// `login_required` (OpenID Connect Core §3.1.2.6) and where the page
/// script sends the owner to sign in again (`redirect`).
fn sign_in_again_json() -> Response {
    let mut r = json_with(
        json!({
            "error": "login_required",
            "error_description": recent_sign_in_needed("adding a passkey"),
            "redirect": sign_in_again_url("/account/passkeys"),
        }),
        Vec::new(),
    );
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r
}

pub(super) fn json_with(
    body: serde_json::Value,
    cookies: Vec<Option<axum::http::HeaderValue>>,
) -> Response {
    let mut r = axum::Json(body).into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    pages::with_cookies(r, cookies)
}

/// `POST /passkeys/register/options`: creation options for the
/// signed-in owner, excluding the passkeys they have.
pub async fn register_options(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let session = signed_in(&state, &headers, &form).await?;
    if !signed_in_recently(&state, &session) {
        return Ok(sign_in_again_json());
    }
    let exclude: Vec<Vec<u8>> = store::passkeys::for_user(&state.db, &session.user_id)
        .await?
        .into_iter()
        .map(|p| p.credential_id)
        .collect();
    let (challenge, cookie) = begin(&state, REGISTER, Some(session.user_id.clone())).await?;
    let options = relying_party(&state)?.creation_options(
        &challenge,
        session.user_id.as_bytes(),
        &session.username,
        &exclude,
    );
    Ok(json_with(json!({ "publicKey": options }), vec![cookie]))
}

/// `POST /passkeys/register`: verifies and stores the new passkey.
pub async fn register(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let session = signed_in(&state, &headers, &form).await?;
    if !signed_in_recently(&state, &session) {
        return Ok(sign_in_again_json());
    }
    let ceremony = finish(&state, &headers, REGISTER).await?;
    if ceremony.user_id.as_deref() != Some(session.user_id.as_str()) {
        return Err(refuse(403, "this ceremony was started for another account"));
    }
    let client_data_json = b64(&form, "client_data_json")?;
    let attestation_object = b64(&form, "attestation_object")?;
    let credential = webauthn::verify_registration(
        &relying_party(&state)?,
        &ceremony.challenge,
        &Registration {
            client_data_json: &client_data_json,
            attestation_object: &attestation_object,
        },
    )
    .map_err(|e| refuse(400, e.0))?;
    let name = form.get("name").unwrap_or_default().trim();
    let name = if name.is_empty() {
        format!("Passkey added {}", day(state.now()))
    } else {
        name.chars().take(64).collect()
    };
    let now = state.now();
    let id = random_id()?;
    let stored = store::passkeys::insert(
        &state.db,
        store::passkeys::PasskeyRow {
            id: id.clone(),
            user_id: session.user_id.clone(),
            credential_id: credential.credential_id,
            public_key: credential.public_key,
            alg: credential.alg,
            sign_count: i64::from(credential.sign_count),
            name: name.clone(),
            backup_eligible: credential.backup_eligible,
            created_at: now,
            last_used_at: None,
        },
    )
    .await?;
    if !stored {
        return Err(refuse(400, "this passkey is registered already"));
    }
    state.audit.record(AuditEvent {
        at: now,
        event: "passkey.registered",
        client_id: None,
        subject: Some(session.user_id.clone()),
        ip: ip.to_audit(),
        detail: json!({ "passkey": id, "name": name, "alg": credential.alg }),
    });
    Ok(json_with(
        json!({ "redirect": "/account/passkeys" }),
        vec![clear_ceremony(&state)],
    ))
}

/// `POST /passkeys/login/options`: request options naming no credential,
/// so the authenticator offers the passkeys it holds for this site.
/// Anyone may call it and each call writes a challenge row, so it spends
/// the client address's budget of unauthenticated sign-in writes (shared
/// with sign-up): 429 with `Retry-After` beyond it (SECURITY.md,
/// Unauthenticated writes).
pub async fn login_options(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    check_csrf(&state, &headers, &form)?;
    if let Some(addr) = ip.0
        && let Err(not_until) = state.login_by_ip.check_key(&addr)
    {
        let mut e = OAuthError::new(429, "slow_down", "too many sign-in attempts; wait a minute");
        e.retry_after = Some(crate::clock::retry_after(&not_until));
        return Err(e.into());
    }
    let (challenge, cookie) = begin(&state, LOGIN, None).await?;
    let options = relying_party(&state)?.request_options(&challenge, &[]);
    Ok(json_with(json!({ "publicKey": options }), vec![cookie]))
}

/// `POST /passkeys/login`: verifies the assertion and starts a session,
/// as a password sign-in does (a new session id; the old one dropped).
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    check_csrf(&state, &headers, &form)?;
    let ip_key = ip.0.map(|addr| format!("ip:{addr}"));
    if let Some(k) = &ip_key
        && state
            .login_failures
            .get(k)
            .await
            .is_some_and(|n| n >= FAILURES_PER_IP)
    {
        let mut e = OAuthError::new(429, "slow_down", "too many attempts; wait a minute");
        e.retry_after = Some(60);
        return Err(e.into());
    }
    let result = verify_login(&state, &headers, &form).await;
    let (user_id, passkey_id) = match result {
        Ok(found) => found,
        Err(e) => {
            if let Some(k) = ip_key {
                state
                    .login_failures
                    .entry(k)
                    .and_upsert_with(|n| async move {
                        n.map_or(1, |e| e.into_value().saturating_add(1))
                    })
                    .await;
            }
            return Err(e);
        }
    };
    if let Some(old) = pages::cookie(&headers, &pages::cookie_name(&state, pages::SESSION_COOKIE)) {
        store::users::delete_session(&state.db, sha256(old.as_bytes())).await?;
    }
    let session = pages::start_session(&state, &user_id).await?;
    state.audit.record(AuditEvent {
        at: state.now(),
        event: "user.login",
        client_id: None,
        subject: Some(user_id),
        ip: ip.to_audit(),
        detail: json!({ "method": "passkey", "passkey": passkey_id }),
    });
    let redirect = safe_return_to(form.get("return_to"));
    Ok(json_with(
        json!({ "redirect": redirect }),
        vec![session, clear_ceremony(&state)],
    ))
}

/// The user and passkey a login assertion proves.
async fn verify_login(
    state: &AppStateInner,
    headers: &HeaderMap,
    form: &OAuthForm,
) -> Result<(String, String)> {
    verify_assertion_for(state, headers, form, LOGIN, None).await
}

/// The user and passkey an assertion proves, for the ceremony of
/// `purpose` this browser started (user presence and verification both
/// checked: [`webauthn::verify_assertion`]), and, given `bound`, for the
/// thing its challenge was bound to ([`begin_bound`]).
pub(super) async fn verify_assertion_for(
    state: &AppStateInner,
    headers: &HeaderMap,
    form: &OAuthForm,
    purpose: &str,
    bound: Option<[u8; 16]>,
) -> Result<(String, String)> {
    let ceremony = finish(state, headers, purpose).await?;
    if let Some(bound) = bound
        && ceremony.challenge.get(16..) != Some(&bound[..])
    {
        return Err(refuse(
            400,
            "this passkey ceremony was started for something else; start again",
        ));
    }
    let credential_id = b64(form, "credential_id")?;
    let client_data_json = b64(form, "client_data_json")?;
    let authenticator_data = b64(form, "authenticator_data")?;
    let signature = b64(form, "signature")?;
    let user_handle = b64(form, "user_handle")?;
    let unknown = || {
        refuse(
            401,
            "this passkey is not registered here (it may have been removed)",
        )
    };
    let passkey = store::passkeys::by_credential(&state.db, &credential_id)
        .await?
        .ok_or_else(unknown)?;
    // §7.2 step 6: the user handle the authenticator returns is the
    // account the credential was made for.
    if !user_handle.is_empty() && user_handle != passkey.user_id.as_bytes() {
        return Err(unknown());
    }
    let stored_count = u32::try_from(passkey.sign_count).unwrap_or(u32::MAX);
    let new_count = webauthn::verify_assertion(
        &relying_party(state)?,
        &ceremony.challenge,
        &passkey.public_key,
        stored_count,
        &Assertion {
            client_data_json: &client_data_json,
            authenticator_data: &authenticator_data,
            signature: &signature,
        },
    )
    .map_err(|e| refuse(401, e.0))?;
    if !store::passkeys::record_use(
        &state.db,
        &passkey.id,
        passkey.sign_count,
        i64::from(new_count),
        state.now(),
    )
    .await?
    {
        return Err(refuse(
            401,
            "this passkey was used at the same moment elsewhere; try again",
        ));
    }
    Ok((passkey.user_id, passkey.id))
}

fn day(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

/// `GET /account/passkeys`: the owner's passkeys, the button that adds
/// one, and (once one exists) the way to drop the password.
pub async fn page(
    State(state): State<AppState>,
    Owner(session): Owner,
    headers: HeaderMap,
) -> Result<Response> {
    let passkeys: Vec<_> = store::passkeys::for_user(&state.db, &session.user_id)
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "id": p.id, "name": p.name, "created": day(p.created_at),
                "last_used": p.last_used_at.map(day),
                "synced": p.backup_eligible,
                "alg": match p.alg { webauthn::ES256 => "ES256", webauthn::EDDSA => "EdDSA", _ => "RS256" },
            })
        })
        .collect();
    let has_password = store::users::by_id(&state.db, &session.user_id)
        .await?
        .is_some_and(|u| u.password_hash != crate::accounts::NO_PASSWORD);
    let csrf = pages::csrf(&state, &headers)?;
    let page = pages::render_with_script(
        &state,
        StatusCode::OK,
        "passkeys.html",
        json!({
            "username": session.username, "passkeys": passkeys, "has_password": has_password,
            "csrf_token": csrf.token,
        }),
    )?;
    Ok(pages::with_cookies(page, [csrf.set_cookie]))
}

/// `GET /account/passkeys/{id}/confirm`: the step before removing one.
pub async fn confirm_remove(
    State(state): State<AppState>,
    Owner(session): Owner,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let passkey = match store::passkeys::by_id(&state.db, &id).await? {
        None => return Err(OAuthError::new(404, "not_found", "no such passkey").into()),
        Some(p) if p.user_id != session.user_id => return Err(not_yours()),
        Some(p) => p,
    };
    pages::confirm(
        &state,
        &headers,
        &pages::Confirm {
            question: &format!("Remove the passkey {}?", passkey.name),
            consequence: "You can no longer sign in with it. The authenticator keeps the key until you delete it there too.",
            button: "Remove",
            action_url: &format!("/account/passkeys/{}/delete", passkey.id),
            cancel_url: "/account/passkeys",
        },
    )
}

/// `GET /account/password/confirm`: the step before dropping the password.
pub async fn confirm_remove_password(
    State(state): State<AppState>,
    Owner(session): Owner,
    headers: HeaderMap,
) -> Result<Response> {
    if !signed_in_recently(&state, &session) {
        return Ok(sign_in_again("/account/password/confirm"));
    }
    pages::confirm(
        &state,
        &headers,
        &pages::Confirm {
            question: "Sign in with passkeys only?",
            consequence: "Your password is deleted: nobody can sign in with it any more, you included. Your last passkey cannot be removed while you have no password.",
            button: "Delete my password",
            action_url: "/account/password/remove",
            cancel_url: "/account/passkeys",
        },
    )
}

/// `POST /account/passkeys/{id}/delete`.
pub async fn remove(
    State(state): State<AppState>,
    Owner(session): Owner,
    ip: ClientIp,
    Path(id): Path<String>,
    _: CheckedForm,
) -> Result<Response> {
    let audit = AuditEvent {
        at: state.now(),
        event: "passkey.removed",
        client_id: None,
        subject: Some(session.user_id.clone()),
        ip: ip.to_audit(),
        detail: json!({ "passkey": id }),
    };
    match store::passkeys::delete(&state.db, &session.user_id, &id, audit).await? {
        Removal::Removed => Ok(pages::see_other("/account/passkeys")),
        Removal::NotFound => Err(OAuthError::new(404, "not_found", "no such passkey").into()),
        Removal::NotYours => Err(not_yours()),
        Removal::LastWayIn => Err(refuse(
            400,
            "this is your last passkey and you have no password: you could not sign in again",
        )),
    }
}

/// `POST /account/password/remove`: passkeys only from now on.
pub async fn remove_password(
    State(state): State<AppState>,
    Owner(session): Owner,
    ip: ClientIp,
    _: CheckedForm,
) -> Result<Response> {
    if !signed_in_recently(&state, &session) {
        return Ok(sign_in_again("/account/password/confirm"));
    }
    let audit = AuditEvent {
        at: state.now(),
        event: "user.password_removed",
        client_id: None,
        subject: Some(session.user_id.clone()),
        ip: ip.to_audit(),
        detail: json!({}),
    };
    if !store::passkeys::remove_password(&state.db, &session.user_id, audit).await? {
        return Err(refuse(400, "add a passkey before you delete your password"));
    }
    Ok(pages::see_other("/account/passkeys"))
}

/// `GET /static/passkeys.js`.
pub async fn script() -> Response {
    let mut r = pages::PASSKEYS_JS.into_response();
    let h = r.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    r
}
