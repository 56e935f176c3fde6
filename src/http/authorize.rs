//! The authorization endpoint (OAuth 2.1 §4.1, RFC 9207, RFC 8707, RFC 9449
//! §10) with login and consent pages.
//!
//! Until the client and its redirect URI are verified, errors are shown on
//! a page and never redirected (RFC 6749 §4.1.2.1, RFC 9700 §4.11); after
//! that they go back to the client with `state` and `iss`, by 303.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use url::Url;

use super::pages::{self, Session};
use super::{ClientIp, OAuthForm};
use crate::crypto::{random_token, sha256};
use crate::doctor::{Step, step};
use crate::error::{Error, Result};
use crate::oauth::client_metadata::redirect_uri_matches;
use crate::oauth::grant_type::{AUTHORIZATION_CODE, REFRESH_TOKEN};
use crate::oauth::pkce;
use crate::oauth::resource::{MAX_RESOURCES, ResourceUri};
use crate::oauth::scope::{OFFLINE_ACCESS, Scope};
use crate::resources::Denial;
use crate::state::{AppState, State as AppStateInner};
use crate::store::{self, clients::ClientRecord, grants::CodeRow};

/// Authorization codes live 60 s (SECURITY.md, "Token endpoint: code grant").
pub const CODE_TTL: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prompt {
    None,
    Login,
    Consent,
}

/// A validated authorization request.
struct AuthorizationRequest {
    client: Arc<ClientRecord>,
    redirect_uri: String,
    state: Option<String>,
    scope: Scope,
    resources: Vec<ResourceUri>,
    code_challenge: String,
    prompt: Option<Prompt>,
    dpop_jkt: Option<String>,
    /// RFC 9396: the approved details, checked, with their locations.
    details: Option<Vec<serde_json::Value>>,
    /// The query string as received, carried through login and consent.
    raw_query: String,
}

/// Where an error goes.
enum Failure {
    /// Client or redirect URI not verified: a page, never a redirect.
    Page {
        error: &'static str,
        description: String,
        /// For the operator (the connection doctor), never shown.
        fix: Option<String>,
    },
    /// Verified: back to the client.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
        fix: Option<String>,
    },
    Backend(Error),
}

impl Failure {
    /// What would fix it, for the operator's trace of the client.
    fn fix(mut self, text: impl Into<String>) -> Self {
        if let Failure::Page { fix, .. } | Failure::Redirect { fix, .. } = &mut self {
            *fix = Some(text.into());
        }
        self
    }
}

/// The `/authorize` request a failure belongs to, for the doctor and for
/// the person's error page.
struct Attempt<'a> {
    id: &'a str,
    /// The client, when it is one of ours (registered or a document).
    client_id: Option<&'a str>,
}

/// Records a refusal in the client's trace.
fn trace_failure(state: &AppStateInner, attempt: &Attempt<'_>, f: &Failure) {
    let (description, fix) = match f {
        Failure::Page {
            description, fix, ..
        }
        | Failure::Redirect {
            description, fix, ..
        } => (description, fix),
        Failure::Backend(_) => return,
    };
    if let Some(client_id) = attempt.client_id {
        state.clients.doctor.record(Step {
            client_id,
            attempt: Some(attempt.id),
            step: step::AUTHORIZE,
            refused: Some(description),
            fix: fix.as_deref(),
            detail: None,
        });
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Backend(e)
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Backend(e.into())
    }
}

/// RFC 9207 / RFC 6749 §4.1.2: `redirect_uri` plus parameters, keeping any
/// query the registered URI already has.
fn redirect_with(state: &AppStateInner, redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return pages::see_other("/");
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        q.append_pair("iss", &state.config.issuer);
    }
    pages::see_other(url.as_str())
}

fn failure_response(state: &AppStateInner, f: Failure) -> Result<Response> {
    failure_response_in(state, f, None)
}

/// [`failure_response`]; the page names the client and the attempt, what
/// the person sends their operator (who finds the attempt's trace).
fn failure_response_in(
    state: &AppStateInner,
    f: Failure,
    attempt: Option<&Attempt<'_>>,
) -> Result<Response> {
    match f {
        Failure::Page {
            error, description, ..
        } => pages::render(
            state,
            StatusCode::BAD_REQUEST,
            "error.html",
            json!({
                "error": error, "description": description,
                "client_id": attempt.and_then(|a| a.client_id),
                "attempt": attempt.map(|a| a.id),
            }),
        ),
        Failure::Redirect {
            redirect_uri,
            state: client_state,
            error,
            description,
            ..
        } => {
            let mut params = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = client_state.as_deref() {
                params.push(("state", s));
            }
            Ok(redirect_with(state, &redirect_uri, &params))
        }
        Failure::Backend(e) => Err(e),
    }
}

fn page(error: &'static str, description: impl Into<String>) -> Failure {
    Failure::Page {
        error,
        description: description.into(),
        fix: None,
    }
}

/// `a, b, c`, or `none`.
fn list(items: &[String]) -> String {
    match items {
        [] => "none".into(),
        some => some.join(", "),
    }
}

/// Parses and validates, in the order that decides where errors go.
async fn parse(
    state: &AppStateInner,
    raw_query: &str,
    ip: &ClientIp,
) -> std::result::Result<AuthorizationRequest, Failure> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let all = |name: &str| {
        pairs
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let single = |name: &str| -> std::result::Result<Option<&str>, String> {
        match all(name).as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(format!("parameter {name} is repeated")),
        }
    };

    // 1. Client and redirect URI: failures are pages.
    let client_id = single("client_id")
        .map_err(|d| page("invalid_request", d))?
        .ok_or_else(|| page("invalid_request", "client_id is missing"))?;
    if let Err(retry_after) = state.clients.document_fetch_allowed(client_id, ip.0) {
        return Err(page(
            "temporarily_unavailable",
            format!(
                "too many client metadata documents fetched for your address; retry in {retry_after} s"
            ),
        ));
    }
    let Some(client) = state.clients.get(client_id).await? else {
        // A metadata-document client whose document failed: say why.
        return Err(
            match crate::clients::document::failure(&state.clients, client_id).await {
                Some((why, retry_after)) => page(
                    "invalid_client",
                    format!(
                        "the client's metadata document was not accepted: {why}; it is fetched again in {retry_after} s"
                    ),
                )
                .fix(format!(
                    "the client's publisher fixes the document at {client_id} ({why}); it is fetched again in {retry_after} s"
                )),
                None => page("invalid_client", "unknown client_id"),
            },
        );
    };
    let registered = &client.metadata.redirect_uris;
    let redirect_uri = match single("redirect_uri").map_err(|d| page("invalid_request", d))? {
        Some(uri) => {
            if !registered.iter().any(|r| redirect_uri_matches(r, uri)) {
                return Err(page(
                    "invalid_request",
                    "redirect_uri is not registered for this client",
                )
                .fix(format!(
                    "redirect_uri {uri:?} is not registered for this client; registered: {}. \
                     {}, or have the client send one of these",
                    list(registered),
                    match client.kind {
                        crate::oauth::client_kind::ClientKind::MetadataDocument => "The client's publisher adds it to its document",
                        _ => "Update the registration (RFC 7592, or `agentauth client` for clients an operator made)",
                    }
                )));
            }
            uri.to_string()
        }
        None => match registered.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(
                    page("invalid_request", "redirect_uri is required").fix(format!(
                        "the client registered several redirect URIs ({}) and must name one",
                        list(registered)
                    )),
                );
            }
        },
    };
    let client_state = single("state").ok().flatten().map(str::to_string);

    // 2. Everything else: failures go back to the client.
    let back = |error: &'static str, description: String| Failure::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: client_state.clone(),
        error,
        description,
        fix: None,
    };
    for (name, _) in &pairs {
        if name != "resource" && all(name).len() > 1 {
            return Err(back(
                "invalid_request",
                format!("parameter {name} is repeated"),
            ));
        }
    }
    let get = |name: &str| single(name).ok().flatten();
    match get("response_type") {
        Some("code") => {}
        Some(_) => {
            return Err(back(
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            ));
        }
        None => return Err(back("invalid_request", "response_type is missing".into())),
    }
    if !client.metadata.allows_grant(AUTHORIZATION_CODE) {
        return Err(back(
            "unauthorized_client",
            "client is not registered for the authorization_code grant".into(),
        )
        .fix(format!(
            "the client registered grant_types {}; add authorization_code",
            list(&client.metadata.grant_types)
        )));
    }
    // OAuth 2.1 §4.1.1: PKCE with S256 is mandatory.
    let code_challenge = get("code_challenge").ok_or_else(|| {
        back(
            "invalid_request",
            "code_challenge is required (PKCE)".into(),
        )
        .fix("OAuth 2.1 requires PKCE: the client must send code_challenge and code_challenge_method=S256")
    })?;
    if get("code_challenge_method") != Some("S256") {
        return Err(back(
            "invalid_request",
            "code_challenge_method must be S256".into(),
        ));
    }
    if !pkce::valid_challenge(code_challenge) {
        return Err(back(
            "invalid_request",
            "code_challenge must be a base64url SHA-256 (43 characters)".into(),
        ));
    }
    let requested = all("resource");
    if requested.len() > MAX_RESOURCES {
        return Err(back(
            "invalid_target",
            format!("at most {MAX_RESOURCES} resource values per request"),
        ));
    }
    let requested = requested
        .into_iter()
        .map(|r| {
            ResourceUri::parse(r).map_err(|why| back("invalid_target", format!("{why}: {r:?}")))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let registry = &state.resources.registry;
    let denied = |denial: Denial| match denial {
        Denial::Target(why) => back("invalid_target", why).fix(format!(
            "registered resources: {}. Register it (--resource or the resources file) or \
             have the client send one of these",
            list(&registry.iter().map(|r| r.uri.clone()).collect::<Vec<_>>())
        )),
        Denial::Scope(why) => back("invalid_scope", why).fix(format!(
            "scopes offered here: {}. Offer it at the resource (the resources file's scopes \
             or --scopes) or have the client ask for these",
            state
                .clients
                .scopes_supported
                .as_ref()
                .map_or("any".to_string(), ToString::to_string)
        )),
        Denial::Client(why) => back("unauthorized_client", why),
        Denial::Details(why) => back("invalid_authorization_details", why),
    };
    // RFC 9396: each entry's locations are resources of the token; with
    // `resource` given, they must be among them.
    let details = get("authorization_details")
        .map(|text| registry.check_details(text))
        .transpose()
        .map_err(denied)?;
    let requested =
        crate::resources::with_locations(requested, details.as_deref()).map_err(denied)?;
    let targets = state
        .resources
        .registry
        .resolve(&requested)
        .map_err(denied)?;
    let allowed = client.metadata.scope();
    // A self-registered client's `scope` is its own claim, not a limit
    // anyone set (it could register again with any scope): what bounds its
    // requests is what the resources offer and what the owner consents to,
    // so MCP clients that registered with their first scopes can step up.
    // For clients an operator made, the registered scope is the ceiling.
    let self_registered = matches!(
        client.kind,
        crate::oauth::client_kind::ClientKind::Dynamic
            | crate::oauth::client_kind::ClientKind::MetadataDocument
    );
    let scope = match get("scope") {
        Some(text) => {
            let s = Scope::parse(text).map_err(|e| back("invalid_scope", e.to_string()))?;
            if !self_registered
                && let Some(extra) = s.missing_from(&allowed).find(|s| *s != OFFLINE_ACCESS)
            {
                return Err(back(
                    "invalid_scope",
                    format!("scope {extra:?} is not allowed for this client"),
                )
                .fix(format!(
                    "the operator registered this client with scope {:?}; widen it or have \
                     the client ask for less",
                    allowed.to_string()
                )));
            }
            targets.check_scope(&s).map_err(denied)?;
            s
        }
        // Approved details are the grant: with them, no scope unless asked.
        None if details.is_some() => Scope::default(),
        None => targets.narrow(&allowed),
    };
    let resources = targets.uris();
    let prompt = match get("prompt") {
        None => None,
        Some("none") => Some(Prompt::None),
        Some("login") => Some(Prompt::Login),
        Some("consent") => Some(Prompt::Consent),
        Some(other) => {
            return Err(back(
                "invalid_request",
                format!("prompt={other} is not supported"),
            ));
        }
    };
    // RFC 9449 §10: binds the code to a DPoP key.
    let dpop_jkt = get("dpop_jkt").map(str::to_string);
    if dpop_jkt.as_ref().is_some_and(|j| j.len() != 43) {
        return Err(back(
            "invalid_request",
            "dpop_jkt must be a base64url SHA-256 thumbprint".into(),
        ));
    }
    Ok(AuthorizationRequest {
        client,
        redirect_uri,
        state: client_state,
        scope,
        resources,
        code_challenge: code_challenge.to_string(),
        prompt,
        dpop_jkt,
        details,
        raw_query: raw_query.to_string(),
    })
}

/// `GET /authorize`.
pub async fn get(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Response> {
    let query = query.unwrap_or_default();
    let attempt_id = crate::doctor::attempt_id();
    let req = match parse(&state, &query, &ip).await {
        Ok(r) => r,
        Err(f) => {
            let client_id = named_client(&state, &query).await;
            let attempt = Attempt {
                id: &attempt_id,
                client_id: client_id.as_deref(),
            };
            trace_failure(&state, &attempt, &f);
            return failure_response_in(&state, f, Some(&attempt));
        }
    };
    let attempt = Attempt {
        id: &attempt_id,
        client_id: Some(&req.client.client_id),
    };
    let passed = |step: &'static str| {
        state.clients.doctor.record(Step {
            client_id: &req.client.client_id,
            attempt: Some(&attempt_id),
            step,
            refused: None,
            fix: None,
            detail: None,
        })
    };
    let session = pages::session(&state, &headers).await?;
    // After prompt=login the login page returns here with `login_after`:
    // a session older than that has not signed in again yet.
    let login_after = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "login_after")
        .and_then(|(_, v)| v.parse::<i64>().ok());
    let session = match (session, req.prompt) {
        (Some(_), Some(Prompt::Login)) => {
            // OpenID Connect Core §3.1.2.1 `prompt=login`: a fresh sign-in,
            // whatever session the browser has.
            let back = fresh_login_required(&query, state.now());
            return Ok(pages::see_other(&login_url(&back)));
        }
        (Some(s), _) if login_after.is_some_and(|t| s.auth_time < t) => {
            return Ok(pages::see_other(&login_url(&query)));
        }
        (Some(s), _) => s,
        (None, Some(Prompt::None)) => {
            let f = back_to(&req, "login_required", "the user is not signed in")
                .fix("prompt=none needs a signed-in user; the client should retry without it");
            trace_failure(&state, &attempt, &f);
            return failure_response(&state, f);
        }
        (None, _) => {
            passed(step::SIGN_IN);
            return Ok(pages::see_other(&login_url(&strip_prompt_login(&query))));
        }
    };
    passed(step::AUTHORIZE);
    let earlier =
        store::grants::consent(&state.db, &session.user_id, &req.client.client_id).await?;
    // Approved details are one action each: always asked, never remembered.
    let consented = req.details.is_none() && earlier.as_ref().is_some_and(|c| covers(c, &req));
    if consented && req.prompt != Some(Prompt::Consent) {
        passed(step::CONSENT);
        return issue_code(&state, &req, &session).await;
    }
    if req.prompt == Some(Prompt::None) {
        let f = back_to(&req, "consent_required", "the user has not consented")
            .fix("prompt=none needs an earlier consent; the client should retry without it");
        trace_failure(&state, &attempt, &f);
        return failure_response(&state, f);
    }
    consent_page(
        &state,
        &headers,
        &req,
        &session,
        earlier.as_ref(),
        &attempt_id,
    )
    .await
}

/// The `client_id` of a refused request, when it names one of our
/// clients (registered, or a metadata document), for its trace.
async fn named_client(state: &AppStateInner, query: &str) -> Option<String> {
    let id = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.into_owned())?;
    state.clients.known(&id).await.then_some(id)
}

fn back_to(req: &AuthorizationRequest, error: &'static str, description: &str) -> Failure {
    Failure::Redirect {
        redirect_uri: req.redirect_uri.clone(),
        state: req.state.clone(),
        error,
        description: description.into(),
        fix: None,
    }
}

fn login_url(query: &str) -> String {
    let return_to = format!("/authorize?{query}");
    format!(
        "/login?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", &return_to)
            .finish()
    )
}

/// The request again, with `prompt=login` replaced by `login_after=now`:
/// it comes back from the login page and is served only to a session that
/// signed in at or after `now`.
fn fresh_login_required(query: &str, now: i64) -> String {
    let mut back = strip_prompt_login(query);
    if !back.is_empty() {
        back.push('&');
    }
    back.push_str(&format!("login_after={now}"));
    back
}

/// The query without `prompt=login` (nor an earlier `login_after`).
fn strip_prompt_login(query: &str) -> String {
    let kept = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, v)| !(k == "prompt" && v == "login") && k != "login_after");
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish()
}

fn covers(consent: &store::grants::ConsentRow, req: &AuthorizationRequest) -> bool {
    let granted = Scope::parse(&consent.scope).unwrap_or_default();
    let resources: Vec<String> =
        serde_json::from_value(consent.resources.clone()).unwrap_or_default();
    req.scope.is_subset_of(&granted)
        && req
            .resources
            .iter()
            .all(|r| resources.iter().any(|g| g == r.as_str()))
}

/// Human words for a scope on the consent page.
fn describe(scope: &str) -> String {
    match scope {
        "offline_access" => "Keep access while you are away (a refresh token)".into(),
        "openid" => "Know who you are".into(),
        "profile" => "See your profile".into(),
        other => match other.split_once(':') {
            Some((what, "read")) => format!("Read your {what}"),
            Some((what, "write")) => format!("Change your {what}"),
            _ => format!("Use the permission “{other}”"),
        },
    }
}

/// `2592000` → "30 days"; `7200` → "2 hours".
fn lifetime_in_words(seconds: i64) -> String {
    let (n, unit) = match seconds {
        s if s >= 2 * 86_400 => (s / 86_400, "days"),
        s if s >= 2 * 3600 => (s / 3600, "hours"),
        s => (s.max(0) / 60, "minutes"),
    };
    format!("{n} {unit}")
}

async fn consent_page(
    state: &AppStateInner,
    headers: &HeaderMap,
    req: &AuthorizationRequest,
    session: &Session,
    earlier: Option<&store::grants::ConsentRow>,
    attempt: &str,
) -> Result<Response> {
    let csrf = pages::csrf(state, headers)?;
    let host = Url::parse(&req.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| req.redirect_uri.clone());
    let localhost_only =
        crate::oauth::cimd::is_document_url(&req.client.client_id, state.config.insecure_fetch)
            && req.client.metadata.redirect_uris.iter().all(|u| {
                Url::parse(u)
                    .ok()
                    .and_then(|u| {
                        u.host_str()
                            .map(|h| matches!(h, "localhost" | "127.0.0.1" | "[::1]"))
                    })
                    .unwrap_or(false)
            });
    // Issue 14 item 4: each resource in its own words (RFC 9728
    // `resource_name`, our `scope_descriptions`), the operator's name for
    // it first.
    let mut resources = Vec::with_capacity(req.resources.len());
    let mut descriptions = std::collections::BTreeMap::new();
    for uri in &req.resources {
        let published = state.resources.metadata.get(uri.as_str()).await;
        let registered = state
            .resources
            .registry
            .get(uri.as_str())
            .map(|r| r.name.clone())
            .filter(|name| name != uri.as_str());
        let name = registered.or_else(|| published.as_ref().and_then(|m| m.resource_name.clone()));
        if let Some(m) = &published {
            for (scope, text) in &m.scope_descriptions {
                descriptions
                    .entry(scope.clone())
                    .or_insert_with(|| text.clone());
            }
        }
        resources.push(json!({ "uri": uri.as_str(), "name": name }));
    }
    // A step-up asks only for what the owner has not allowed yet; what was
    // allowed before is listed apart and kept.
    let granted = earlier
        .map(|c| Scope::parse(&c.scope).unwrap_or_default())
        .unwrap_or_default();
    let word = |s: &str| {
        json!({
            "name": s,
            "text": descriptions.get(s).cloned().unwrap_or_else(|| describe(s)),
        })
    };
    let scopes: Vec<_> = req
        .scope
        .iter()
        .filter(|s| !granted.contains(s))
        .map(word)
        .collect();
    let kept: Vec<_> = req
        .scope
        .iter()
        .filter(|s| granted.contains(s))
        .map(word)
        .collect();
    // Issue 30 item 9: a refresh token outlives the session; say so, with
    // how long (asked by `offline_access` or not: the grant decides).
    // Approved details get no refresh token.
    let offline = (req.details.is_none() && req.client.metadata.allows_grant(REFRESH_TOKEN))
        .then(|| lifetime_in_words(state.config.refresh_token_ttl));
    let page = pages::render(
        state,
        StatusCode::OK,
        "consent.html",
        json!({
            "offline": offline,
            "client_name": req.client.metadata.client_name.clone().unwrap_or_else(|| req.client.client_id.clone()),
            "client_id": req.client.client_id,
            "username": session.username,
            "redirect_host": host,
            "localhost_only": localhost_only,
            "resources": resources,
            "scopes": scopes,
            "kept_scopes": kept,
            "actions": req.details.as_deref().map(|d| state.resources.registry.details.describe(d)),
            "request": req.raw_query,
            "attempt": attempt,
            "csrf_token": csrf.token,
        }),
    )?;
    Ok(pages::with_cookies(page, [csrf.set_cookie]))
}

async fn issue_code(
    state: &AppStateInner,
    req: &AuthorizationRequest,
    session: &Session,
) -> Result<Response> {
    let code = random_token()?;
    let now = state.now();
    let resources: Vec<&str> = req.resources.iter().map(ResourceUri::as_str).collect();
    store::grants::insert_code(
        &state.db,
        CodeRow {
            code_hash: sha256(code.as_bytes()).to_vec(),
            client_id: req.client.client_id.clone(),
            user_id: session.user_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge.clone(),
            scope: req.scope.to_string(),
            resources: json!(resources),
            dpop_jkt: req.dpop_jkt.clone(),
            auth_time: session.auth_time,
            expires_at: now + CODE_TTL,
            consumed_at: None,
            family_id: None,
            access_jti: None,
            access_exp: None,
            authorization_details: req
                .details
                .as_ref()
                .map(|d| serde_json::Value::from(d.clone()).to_string()),
        },
    )
    .await?;
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = req.state.as_deref() {
        params.push(("state", s));
    }
    Ok(redirect_with(state, &req.redirect_uri, &params))
}

/// `POST /authorize/decision`: the consent form.
pub async fn decision(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, crate::error::OAuthError>,
) -> Result<Response> {
    let Ok(form) = form else {
        return failure_response(&state, page("invalid_request", "malformed form"));
    };
    if !pages::csrf_ok(&state, &headers, form.get("csrf_token")) {
        return failure_response(
            &state,
            page(
                "invalid_request",
                "the form expired or was not sent by this site; go back and try again",
            ),
        );
    }
    let Some(session) = pages::session(&state, &headers).await? else {
        return failure_response(
            &state,
            page(
                "login_required",
                "your session ended; start again from the application",
            ),
        );
    };
    let req = match parse(&state, form.get("request").unwrap_or_default(), &ip).await {
        Ok(r) => r,
        Err(f) => return failure_response(&state, f),
    };
    // The attempt the consent page was shown for (or a new one).
    let attempt_id = form
        .get("attempt")
        .filter(|a| a.len() <= 16 && a.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map_or_else(crate::doctor::attempt_id, str::to_string);
    let decided = |refused: Option<&str>| {
        state.clients.doctor.record(Step {
            client_id: &req.client.client_id,
            attempt: Some(&attempt_id),
            step: step::CONSENT,
            refused,
            fix: None,
            detail: None,
        })
    };
    match form.get("decision") {
        Some("approve") => {
            decided(None);
            let now = state.now();
            let resources: Vec<&str> = req.resources.iter().map(ResourceUri::as_str).collect();
            store::grants::add_consent(
                &state.db,
                store::grants::ConsentRow {
                    user_id: session.user_id.clone(),
                    client_id: req.client.client_id.clone(),
                    scope: req.scope.to_string(),
                    resources: json!(resources),
                    granted_at: now,
                },
            )
            .await?;
            state.audit.record(store::audit::AuditEvent {
                at: now,
                event: "consent.granted",
                client_id: Some(req.client.client_id.clone()),
                subject: Some(session.user_id.clone()),
                ip: ip.to_audit(),
                detail: json!({ "scope": req.scope.to_string(), "resources": resources }),
            });
            issue_code(&state, &req, &session).await
        }
        Some("deny") => {
            decided(Some("the user denied the request"));
            failure_response(
                &state,
                back_to(&req, "access_denied", "the user denied the request"),
            )
        }
        _ => failure_response(&state, back_to(&req, "invalid_request", "no decision")),
    }
}
