//! Bridge-certificate discovery (issue 16): the trust bundle, the
//! authority document, and the nonce endpoint whose nonces proofs of
//! possession sign. The certificates themselves come from `/token`
//! (`urn:agentauth:params:grant-type:bridge-cert`).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::json_no_store;
use crate::agents::bridge::ca::{REFRESH, authority_document};
use crate::agents::bridge::nonce::TTL;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Verifiers re-read the bundle this often: a CA dropped by a rotation
/// leaves their trust within about this time plus [`REFRESH`].
const BUNDLE_MAX_AGE: u64 = 60;

/// `GET /.well-known/ca-bundle.pem`: the current epoch's CA and the
/// previous one, PEM. From memory when the database is away; 503 when
/// this node holds no CA it can open (never an empty bundle).
pub async fn bundle(State(state): State<AppState>) -> Response {
    let set = state.agents.bridge.fresh(&state.db, state.now()).await;
    if set.bundle_pem.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "no bridge CA is available on this node\n",
        )
            .into_response();
    }
    let mut r = set.bundle_pem.clone().into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pem-certificate-chain"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={BUNDLE_MAX_AGE}")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    r
}

/// `GET /.well-known/agentauth-authority.json`.
pub async fn authority(State(state): State<AppState>) -> Response {
    let set = state.agents.bridge.fresh(&state.db, state.now()).await;
    let doc = authority_document(
        &state.config.issuer,
        &set,
        state.config.ca_epoch,
        state.config.bridge_cert_ttl,
    );
    let mut r = axum::Json(doc).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", REFRESH.as_secs())) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    r
}

/// `POST /bridge-certs/nonce`: a fresh single-use nonce, in the body (the
/// shape of OpenID4VCI's nonce endpoint) and as `DPoP-Nonce`.
pub async fn nonce(State(state): State<AppState>) -> Result<Response> {
    let nonce = state
        .agents
        .bridge_nonces
        .issue(state.now())
        .map_err(Error::from)?;
    let mut r = json_no_store(
        StatusCode::OK,
        &json!({ "c_nonce": nonce, "c_nonce_expires_in": TTL }),
    );
    if let Ok(v) = HeaderValue::from_str(&nonce) {
        r.headers_mut().insert("dpop-nonce", v);
    }
    Ok(r)
}
