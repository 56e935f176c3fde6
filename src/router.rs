//! The routes, and the middleware around them. Handlers are in
//! [`crate::http`], one file per endpoint.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State as AxumState};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::http;
use crate::metrics::{HttpLabels, RouteLabels};
use crate::state::AppState;

/// Largest request body any route reads; the OAuth endpoints set their
/// own, smaller limits with an RFC 6749 §5.2 error (see `http::MAX_FORM_BYTES`).
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn build(state: AppState) -> Router {
    // The OAuth endpoints proper: every response is no-store (RFC 6749
    // §5.1, RFC 7591 §3.2.1), errors included.
    let oauth = Router::new()
        .route("/register", post(http::register::create))
        .route("/register/challenge", get(http::register::challenge))
        .route(
            "/register/{client_id}",
            get(http::register::read)
                .put(http::register::update)
                .delete(http::register::delete),
        )
        .route("/token", post(http::token::post))
        .route("/bc-authorize", post(http::backchannel::post))
        .route("/introspect", post(http::introspect::post))
        .route("/doctor/refusals", post(http::refusals::post))
        .route("/revoke", post(http::revoke::post))
        .route("/login-requests", post(http::login_requests::create))
        .route("/login-requests/{id}", get(http::login_requests::read))
        .route(
            "/login-requests/{id}/approve",
            post(http::login_requests::approve),
        )
        .route(
            "/login-requests/{id}/deny",
            post(http::login_requests::deny),
        )
        .route(
            "/login-requests/{id}/events",
            get(http::login_requests::events),
        )
        .route("/bridge-certs/nonce", post(http::bridge::nonce))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::PRAGMA,
            HeaderValue::from_static("no-cache"),
        ))
        .layer(api_cors(&state.config.cors_allowed_origins));
    // Public documents: any origin may read them (browser-based MCP
    // clients discover us from a web page).
    let mut public = Router::new()
        .route("/jwks.json", get(http::jwks::get))
        .route("/.well-known/ca-bundle.pem", get(http::bridge::bundle))
        .route("/statuslists", get(http::status_lists::aggregation))
        .route("/statuslists/{id}", get(http::status_lists::list))
        .route(
            "/.well-known/agentauth-authority.json",
            get(http::bridge::authority),
        )
        // OpenID SSF 1.0 §7.2: `/.well-known/ssf-configuration` inserted
        // before the issuer's path, if it has one.
        .route("/.well-known/ssf-configuration", get(http::ssf::get));
    if let Some(path) = issuer_path(&state.config.issuer) {
        public = public.route(
            &format!("/.well-known/ssf-configuration{path}"),
            get(http::ssf::get),
        );
    }
    // RFC 8414 §3 and, because MCP clients try it first, OpenID Connect
    // Discovery's location, with the same document; when the issuer has a
    // path, RFC 8414 §3.1's path-inserted forms (and OIDC's appended one).
    let metadata = metadata_paths(&state.config.issuer);
    for path in &metadata {
        public = public.route(path, get(http::metadata::get));
    }
    let openapi = http::openapi::document(
        &state.config.issuer,
        &metadata,
        state.config.metrics_listen.is_none(),
    );
    public = public.route(
        "/openapi.json",
        get(move || {
            let body = openapi.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let public = public.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::any())
            .allow_methods([Method::GET]),
    );
    // The owner's console and the operator pages: errors as pages.
    let console = Router::new()
        .route(
            "/account/agents",
            get(http::console::list).post(http::console::create),
        )
        .route("/account/agents/new", get(http::console::new_form))
        .route("/account/agents/{id}", get(http::console::show))
        .route("/account/agents/{id}/confirm", get(http::console::confirm))
        .route("/account/agents/{id}/{action}", post(http::console::act))
        .route("/account/approvals", get(http::approvals::page))
        .route("/account/approvals/events", get(http::approvals::events))
        .route(
            "/account/approvals/{id}/options",
            post(http::approvals::options),
        )
        .route(
            "/account/approvals/{id}/approve",
            post(http::approvals::approve),
        )
        .route("/account/approvals/{id}/deny", post(http::approvals::deny))
        .route("/account/passkeys", get(http::passkeys::page))
        .route(
            "/account/passkeys/{id}/confirm",
            get(http::passkeys::confirm_remove),
        )
        .route(
            "/account/passkeys/{id}/delete",
            post(http::passkeys::remove),
        )
        .route(
            "/account/password/confirm",
            get(http::passkeys::confirm_remove_password),
        )
        .route(
            "/account/password/remove",
            post(http::passkeys::remove_password),
        )
        .route("/admin/clients", get(http::operator::clients))
        .route("/admin/clients/{id}", get(http::operator::client))
        .route("/admin/keys", get(http::operator::keys))
        .route("/admin/audit", get(http::operator::audit))
        .route(
            "/admin/receivers",
            get(http::operator::receivers).post(http::operator::add_receiver),
        )
        .route(
            "/admin/receivers/{id}/delete",
            post(http::operator::remove_receiver),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http::pages::html_errors,
        ));
    let mut router = Router::new();
    if state.config.metrics_listen.is_none() {
        router = router.route("/metrics", get(http::ops::metrics));
    }
    // The HTML pages: no CORS, errors as pages.
    let pages = Router::new()
        .route("/authorize", get(http::authorize::get))
        .route("/authorize/decision", post(http::authorize::decision))
        .route(
            "/login",
            get(http::account::login_form).post(http::account::login),
        )
        .route("/logout", post(http::account::logout))
        .route(
            "/signup",
            get(http::account::signup_form).post(http::account::signup),
        )
        .route("/account", get(http::account::account))
        .route("/account/revoke", post(http::account::revoke))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http::pages::html_errors,
        ));
    // The rest: no CORS at all.
    let routes = router
        // Passkey ceremonies (JSON for static/passkeys.js).
        .route(
            "/passkeys/register/options",
            post(http::passkeys::register_options),
        )
        .route("/passkeys/register", post(http::passkeys::register))
        .route(
            "/passkeys/login/options",
            post(http::passkeys::login_options),
        )
        .route("/passkeys/login", post(http::passkeys::login))
        .route("/static/passkeys.js", get(http::passkeys::script))
        .route("/healthz", get(http::ops::healthz))
        .route("/readyz", get(http::ops::readyz))
        .merge(pages)
        .merge(console)
        .merge(oauth)
        .merge(public)
        .fallback(http::ops::not_found);
    with_common_layers(routes, state)
}

/// The layers every route gets: panic safety, security headers, the body
/// limit and metrics. Public so that tests can put their own routes (one
/// that panics, say) under exactly these layers.
pub fn with_common_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        // Innermost of the common layers, so that a panic's 500 still gets
        // the security headers and is counted by `record_metrics`.
        .layer(CatchPanicLayer::custom({
            let state = state.clone();
            move |payload: Box<dyn std::any::Any + Send + 'static>| {
                panicked(&state, payload.as_ref())
            }
        }))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

/// A handler panicked: the request gets RFC 6749 §5.2's `server_error`
/// (never the panic's text), the operator a log line and a counter.
fn panicked(state: &AppState, payload: &(dyn std::any::Any + Send)) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string payload");
    tracing::error!(panic = what, "a handler panicked");
    state.metrics.panics.inc();
    let mut response =
        crate::error::OAuthError::new(500, "server_error", "internal error").into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// CORS for the OAuth endpoints that browser-based clients call
/// (registration, token, introspection, revocation). No cookies are read
/// there, so credentials are never allowed; `*` allows any origin.
fn api_cors(allowed: &[String]) -> CorsLayer {
    let origin = if allowed.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("dpop"),
        ])
        .expose_headers([
            header::WWW_AUTHENTICATE,
            header::RETRY_AFTER,
            HeaderName::from_static("dpop-nonce"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The router of `--metrics-listen`: /metrics alone.
pub fn metrics(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(http::ops::metrics))
        .fallback(http::ops::not_found)
        .with_state(state)
}

/// Where the metadata document is served, for an issuer with or without a
/// path component.
fn metadata_paths(issuer: &str) -> Vec<String> {
    let mut paths = vec![
        "/.well-known/oauth-authorization-server".to_string(),
        "/.well-known/openid-configuration".to_string(),
    ];
    if let Some(issuer_path) = issuer_path(issuer) {
        paths.push(format!(
            "/.well-known/oauth-authorization-server{issuer_path}"
        ));
        paths.push(format!("/.well-known/openid-configuration{issuer_path}"));
        paths.push(format!("{issuer_path}/.well-known/openid-configuration"));
    }
    paths
}

/// The issuer's path without its trailing `/`, when it has one.
fn issuer_path(issuer: &str) -> Option<String> {
    url::Url::parse(issuer)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .ok()
        .filter(|p| !p.is_empty())
}

async fn record_metrics(
    AxumState(state): AxumState<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            method,
            status,
        })
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}
