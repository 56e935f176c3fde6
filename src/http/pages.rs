//! Server-rendered pages: templates, security headers, the session cookie
//! and CSRF tokens.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::crypto::{random_token, sha256};
use crate::error::Error;
use crate::state::State;
use crate::store;

pub const SESSION_COOKIE: &str = "agentauth_session";
pub const CSRF_COOKIE: &str = "agentauth_csrf";

/// A cookie's name on the wire: with an https issuer, `__Host-` prefixed
/// (RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain), so that no other host
/// or sibling subdomain, and no plain-http page, can set or shadow it.
pub fn cookie_name(state: &State, base: &str) -> String {
    if state.config.issuer.starts_with("https://") {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}
/// Login sessions last 12 hours.
pub const SESSION_TTL: i64 = 12 * 3600;

/// Renders a page with the headers every page carries: no caching, no
/// framing (RFC 9700 §4.16), no scripts, no referrer.
pub fn render<C: Serialize>(
    state: &State,
    status: StatusCode,
    name: &str,
    context: C,
) -> Result<Response, Error> {
    let html = state
        .templates
        .get_template(name)
        .and_then(|t| t.render(context))
        .map_err(|e| Error::Internal(format!("template {name}: {e}")))?;
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(r)
}

/// The one script any page loads: the passkey ceremonies. Served as a
/// file (`/static/passkeys.js`), allowed by a per-response nonce and
/// pinned by its SHA-256 (Subresource Integrity).
pub const PASSKEYS_JS: &str = include_str!("../../static/passkeys.js");

pub fn passkeys_js_integrity() -> &'static str {
    static SRI: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(sha256(PASSKEYS_JS.as_bytes()))
        )
    });
    &SRI
}

/// Like [`render`], for a page that loads the passkey script: the page
/// gets `script_nonce` and `script_integrity`, and the CSP allows that
/// nonce and `fetch` to our own origin, nothing more.
pub fn render_with_script(
    state: &State,
    status: StatusCode,
    name: &str,
    mut context: serde_json::Value,
) -> Result<Response, Error> {
    let nonce = random_token()?;
    if let Some(map) = context.as_object_mut() {
        map.insert("script_nonce".into(), nonce.clone().into());
        map.insert(
            "script_integrity".into(),
            passkeys_js_integrity().to_string().into(),
        );
    }
    let mut r = render(state, status, name, context)?;
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; connect-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    Ok(r)
}

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// `Set-Cookie` for one of our cookies: HttpOnly, Path=/, Secure when the
/// issuer is https. `max_age` 0 deletes it.
pub fn set_cookie(
    state: &State,
    name: &str,
    value: &str,
    max_age: i64,
    same_site: cookie::SameSite,
) -> Option<HeaderValue> {
    let name = cookie_name(state, name);
    let c = cookie::Cookie::build((name, value))
        .http_only(true)
        .path("/")
        .secure(state.config.issuer.starts_with("https://"))
        .same_site(same_site)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build();
    HeaderValue::from_str(&c.to_string()).ok()
}

/// The signed-in user, if the session cookie names a live session.
pub struct Session {
    pub user_id: String,
    pub username: String,
    pub auth_time: i64,
    pub id_hash: [u8; 32],
    /// An operator (`agentauth user create --admin`).
    pub admin: bool,
}

pub async fn session(state: &State, headers: &HeaderMap) -> Result<Option<Session>, Error> {
    let Some(secret) = cookie(headers, &cookie_name(state, SESSION_COOKIE)) else {
        return Ok(None);
    };
    let id_hash = sha256(secret.as_bytes());
    let Some(row) = store::users::session(&state.db, id_hash, state.now()).await? else {
        return Ok(None);
    };
    let Some(user) = store::users::by_id(&state.db, &row.user_id).await? else {
        return Ok(None);
    };
    Ok(Some(Session {
        user_id: user.id,
        username: user.username,
        auth_time: row.auth_time,
        id_hash,
        admin: user.admin,
    }))
}

/// Starts a fresh session (a new secret at every login: no fixation) and
/// returns its `Set-Cookie`.
pub async fn start_session(state: &State, user_id: &str) -> Result<Option<HeaderValue>, Error> {
    let secret = random_token()?;
    store::users::create_session(
        &state.db,
        sha256(secret.as_bytes()),
        user_id,
        state.now(),
        SESSION_TTL,
    )
    .await?;
    Ok(set_cookie(
        state,
        SESSION_COOKIE,
        &secret,
        SESSION_TTL,
        cookie::SameSite::Lax,
    ))
}

/// CSRF: a random per-browser cookie (SameSite=Strict) and, in each form,
/// an HMAC under a server key of that cookie and of the session cookie the
/// browser holds. A forged form can neither read the cookies nor compute
/// the MAC, and a form rendered for one session is refused in another (a
/// login, a logout or a planted session changes it).
pub struct Csrf {
    pub token: String,
    /// Set when the browser had no CSRF cookie yet.
    pub set_cookie: Option<HeaderValue>,
}

fn csrf_mac(state: &State, headers: &HeaderMap, cookie_value: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &state.csrf_key);
    let session = cookie(headers, &cookie_name(state, SESSION_COOKIE))
        .map(|s| sha256(s.as_bytes()))
        .unwrap_or([0u8; 32]);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(&session);
    ctx.update(cookie_value.as_bytes());
    URL_SAFE_NO_PAD.encode(ctx.sign().as_ref())
}

pub fn csrf(state: &State, headers: &HeaderMap) -> Result<Csrf, Error> {
    Ok(match cookie(headers, &cookie_name(state, CSRF_COOKIE)) {
        Some(value) => Csrf {
            token: csrf_mac(state, headers, &value),
            set_cookie: None,
        },
        None => {
            let value = random_token()?;
            Csrf {
                token: csrf_mac(state, headers, &value),
                set_cookie: set_cookie(
                    state,
                    CSRF_COOKIE,
                    &value,
                    SESSION_TTL,
                    cookie::SameSite::Strict,
                ),
            }
        }
    })
}

/// A confirmation step before a change (`confirm.html`): the question,
/// what follows from it, the button, where the form posts (with a CSRF
/// token) and where Cancel leads.
pub struct Confirm<'a> {
    pub question: &'a str,
    pub consequence: &'a str,
    pub button: &'a str,
    pub action_url: &'a str,
    pub cancel_url: &'a str,
}

pub fn confirm(state: &State, headers: &HeaderMap, step: &Confirm<'_>) -> Result<Response, Error> {
    let csrf = csrf(state, headers)?;
    let page = render(
        state,
        StatusCode::OK,
        "confirm.html",
        serde_json::json!({
            "question": step.question, "consequence": step.consequence, "button": step.button,
            "action_url": step.action_url, "cancel_url": step.cancel_url, "csrf_token": csrf.token,
        }),
    )?;
    Ok(with_cookies(page, [csrf.set_cookie]))
}

pub fn csrf_ok(state: &State, headers: &HeaderMap, presented: Option<&str>) -> bool {
    let (Some(value), Some(presented)) =
        (cookie(headers, &cookie_name(state, CSRF_COOKIE)), presented)
    else {
        return false;
    };
    csrf_mac(state, headers, &value)
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into()
}

/// 303 See Other (RFC 9700 §4.12: never 307 after a POST).
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn with_cookies(
    mut r: Response,
    cookies: impl IntoIterator<Item = Option<HeaderValue>>,
) -> Response {
    for c in cookies.into_iter().flatten() {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// For the console and operator pages: a 4xx answered in the JSON error
/// shape (every handler error is mapped once, in `crate::error`) is shown
/// to the person as a page saying why, with the same status; unless the
/// request asked for JSON (the page script's ceremonies, whose errors it
/// shows in place).
pub async fn html_errors(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let wants_json = request
        .headers()
        .get(header::ACCEPT)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let response = next.run(request).await;
    if wants_json {
        return response;
    }
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let is_json = content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // axum's own rejections (a malformed query string, say) are plain text.
    let is_text = content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !status.is_client_error() || !(is_json || is_text) {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = if is_json {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error_description"].as_str().map(str::to_string))
    } else {
        std::str::from_utf8(&body)
            .ok()
            .map(|t| t.chars().take(300).collect())
    }
    .unwrap_or_else(|| "the request was refused".into());
    let title = match status.as_u16() {
        403 => "Not allowed",
        404 => "Not found",
        _ => "Request refused",
    };
    match render(
        &state,
        status,
        "page_error.html",
        serde_json::json!({ "title": title, "message": message }),
    ) {
        Ok(page) => page,
        Err(e) => e.into_response(),
    }
}
