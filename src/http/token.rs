//! RFC 6749 §3.2 token endpoint, as a short pipeline: parse the form
//! strictly, name the grant, authenticate the client, run the grant.
//! Every response carries `Cache-Control: no-store`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::dpop::{self, DpopHeader};
use super::{ClientIp, OAuthForm, json_no_store};
use crate::clients::Public;
use crate::doctor::{Step, step};
use crate::error::{OAuthError, Result};
use crate::grants;
use crate::oauth::grant_type::{AUTHORIZATION_CODE, REFRESH_TOKEN};
use crate::state::AppState;

/// Whether the request carries client credentials (a bare `client_id`
/// is no credential: RFC 7523 §3.1 lets a JWT bearer request name it).
fn presents_client(headers: &HeaderMap, form: &OAuthForm) -> bool {
    headers.contains_key(axum::http::header::AUTHORIZATION)
        || ["client_assertion", "client_secret"]
            .iter()
            .any(|p| form.get(p).is_some())
}

pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    dpop_header: std::result::Result<DpopHeader, OAuthError>,
    form: std::result::Result<OAuthForm, OAuthError>,
) -> Result<Response> {
    let form = form?;
    let grant = state.grants.lookup(form.require("grant_type")?)?;
    // The connection doctor follows the steps of a user's authorization.
    let step = match grant.grant_type() {
        AUTHORIZATION_CODE => Some(step::CODE_EXCHANGE),
        REFRESH_TOKEN => Some(step::REFRESH),
        _ => None,
    };
    let Some(step) = step else {
        return run(&state, ip, &headers, dpop_header, &form, grant, &mut None).await;
    };
    let mut authenticated = None;
    let answer = run(
        &state,
        ip,
        &headers,
        dpop_header,
        &form,
        grant,
        &mut authenticated,
    )
    .await;
    let refused = match &answer {
        Ok(_) => None,
        Err(crate::error::Error::OAuth(e)) => Some(match &e.description {
            Some(d) => format!("{}: {d}", e.error),
            None => e.error.to_string(),
        }),
        Err(_) => return answer,
    };
    let client_id = match authenticated {
        Some(id) => Some(id),
        // Refused before it authenticated: one of ours by name only.
        None => match form.get("client_id") {
            Some(id) if state.clients.known(id).await => Some(id.to_string()),
            _ => None,
        },
    };
    if let Some(client_id) = client_id {
        state.clients.doctor.record(Step {
            client_id: &client_id,
            attempt: None,
            step,
            refused: refused.as_deref(),
            fix: None,
            detail: None,
        });
    }
    answer
}

fn step_traced(grant: &dyn grants::Grant) -> bool {
    matches!(grant.grant_type(), AUTHORIZATION_CODE | REFRESH_TOKEN)
}

async fn run(
    state: &AppState,
    ip: ClientIp,
    headers: &HeaderMap,
    dpop_header: std::result::Result<DpopHeader, OAuthError>,
    form: &OAuthForm,
    grant: &dyn grants::Grant,
    authenticated: &mut Option<String>,
) -> Result<Response> {
    let DpopHeader(dpop_header) = dpop_header?;
    let endpoint = state.config.endpoint("/token");
    let env = state.grant_env();
    // RFC 7523 §2.1 federation: a workload's assertion is its credential.
    let by_assertion = match presents_client(headers, form) {
        true => None,
        false => grant.authenticate_itself(&env, form),
    };
    let (client, assertion) = match by_assertion {
        Some(authenticated) => {
            let (client, verified) = authenticated.await?;
            (client, Some(verified))
        }
        None => {
            let client =
                super::authenticate_client(state, headers, form, Public::Allowed, &ip).await?;
            (client, None)
        }
    };
    if step_traced(grant) {
        *authenticated = Some(client.client.client_id.clone());
    }
    // RFC 9449 §5: a valid proof binds the token, whatever the grant.
    let proof = match dpop_header {
        Some(proof) => {
            let server_nonce = state.config.dpop_nonce && !grant.checks_dpop_nonce();
            Some(dpop::check_nonce_by(state, &proof, "POST", &endpoint, None, server_nonce).await?)
        }
        None if client.client.metadata.dpop_bound_access_tokens => {
            return Err(OAuthError::invalid_dpop_proof(
                "this client is registered for DPoP-bound tokens; send a DPoP proof",
            )
            .into());
        }
        None => None,
    };
    let request = grants::TokenRequest {
        params: form,
        client: &client,
        proof: proof.as_ref(),
        assertion: assertion.as_ref(),
        now: state.now(),
        ip: ip.to_audit(),
    };
    let response = grants::dispatch(&env, grant, request).await?;
    // Idle self-registered clients are reaped; one that gets tokens is not.
    let id = &client.client.client_id;
    if client.client.kind == crate::oauth::client_kind::ClientKind::Dynamic
        && !state.clients.touched.contains_key(id)
    {
        match crate::store::clients::touch(&state.db, id, state.now()).await {
            Ok(()) => state.clients.touched.insert(id.clone(), ()),
            Err(e) => tracing::warn!(error = %e, "marking a client used failed"),
        }
    }
    let mut response = json_no_store(StatusCode::OK, &response);
    if let Some(nonce) = dpop::fresh_nonce(state).and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert("dpop-nonce", nonce);
    }
    Ok(response)
}
