//! What the console, account and operator pages ask of a request before
//! they run, as extractors, so that no handler repeats it:
//!
//! - [`Owner`]: a signed-in user. Signed out, a `GET` is sent to the login
//!   page, which returns to the same path and query; a form posted after
//!   the session ended is sent there too, returning to `/account` (a POST
//!   cannot be replayed by a redirect).
//! - [`Operator`]: a signed-in operator (`agentauth user create --admin`);
//!   signed out as above, anyone else 403.
//! - [`CheckedForm`]: a form body whose `csrf_token` matches this browser's
//!   cookies ([`super::pages::csrf_ok`]); 403 otherwise.
//!
//! Pages whose refusal is part of the page itself (the login and signup
//! forms re-render with a message, the consent page shows its failure
//! page, logout just redirects) check CSRF themselves.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::Method;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::OAuthForm;
use super::pages::{self, Session};
use crate::error::{Error, OAuthError};
use crate::state::AppState;

/// The signed-in user of a page.
pub struct Owner(pub Session);

/// A signed-in operator.
pub struct Operator(pub Session);

/// A form whose CSRF token is this browser's.
pub struct CheckedForm(pub OAuthForm);

/// `303` to the login page, returning to this page.
fn to_login(parts: &Parts) -> Response {
    let here = match parts.method {
        Method::GET | Method::HEAD => parts
            .uri
            .path_and_query()
            .map_or("/account", |p| p.as_str()),
        _ => "/account",
    };
    pages::see_other(&format!(
        "/login?return_to={}",
        form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
    ))
}

async fn session(parts: &Parts, state: &AppState) -> Result<Session, Response> {
    match pages::session(state, &parts.headers).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(to_login(parts)),
        Err(e) => Err(e.into_response()),
    }
}

impl FromRequestParts<AppState> for Owner {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        session(parts, state).await.map(Owner)
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match session(parts, state).await? {
            s if s.admin => Ok(Operator(s)),
            _ => Err(
                Error::from(OAuthError::new(403, "forbidden", "operators only")).into_response(),
            ),
        }
    }
}

impl FromRequest<AppState> for CheckedForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let headers = req.headers().clone();
        // A body that is no form carries no token: refused alike.
        let form = OAuthForm::from_request(req, state)
            .await
            .unwrap_or_default();
        if pages::csrf_ok(state, &headers, form.get("csrf_token")) {
            Ok(CheckedForm(form))
        } else {
            Err(Error::from(OAuthError::new(
                403,
                "forbidden",
                "the form expired; open it again",
            ))
            .into_response())
        }
    }
}
