//! RFC 6749 §3.2 token endpoint, as a short pipeline: parse the form
//! strictly, name the grant, authenticate the client, run the grant.
//! Every response carries `Cache-Control: no-store`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::client_auth::{self, Public};
use super::{ClientIp, OAuthForm, json_no_store};
use crate::app::AppState;
use crate::error::{OAuthError, Result};
use crate::grants;

pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let grant = grants::parse_grant_type(form.require("grant_type")?)?;
    let endpoint = state.config.endpoint("/token");
    let client =
        client_auth::authenticate(&state, &headers, &form, &endpoint, Public::Allowed).await?;
    let response = grants::dispatch(&state, grant, &client, &form, ip.to_audit()).await?;
    Ok(json_no_store(StatusCode::OK, &response))
}
