//! RFC 7591 dynamic client registration and RFC 7592 management.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

use super::{ClientIp, bearer_token, json_no_store};
use crate::clients::register::{NewClient, Registered, Requester, register};
use crate::config::RegistrationMode;
use crate::crypto::sha256;
use crate::error::{Error, OAuthError, Result};
use crate::oauth::client_kind::ClientKind;
use crate::oauth::client_metadata::{ClientMetadata, ClientMetadataRequest, RegistrationPolicy};
use crate::oauth::scope::Scope;
use crate::state::AppState;
use crate::store::audit::AuditEvent;
use crate::store::{self, clients::ClientRecord};

/// Largest registration request body (SECURITY.md, "Registration and client metadata documents").
pub const MAX_REGISTRATION_BYTES: usize = 16 * 1024;

/// A JSON body of at most [`MAX_REGISTRATION_BYTES`], and the SHA-256
/// of its bytes (what a proof-of-work stamp is bound to).
pub struct MetadataBody(pub ClientMetadataRequest, pub [u8; 32]);

impl<S: Send + Sync> FromRequest<S> for MetadataBody {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> std::result::Result<Self, OAuthError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(OAuthError::invalid_client_metadata(
                "the body must be application/json",
            ));
        }
        let body = super::read_body(req, state, MAX_REGISTRATION_BYTES)
            .await
            .map_err(|_| OAuthError::payload_too_large(MAX_REGISTRATION_BYTES))?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| OAuthError::invalid_client_metadata(format!("body is not JSON: {e}")))?;
        if !value.is_object() {
            return Err(OAuthError::invalid_client_metadata(
                "body must be a JSON object",
            ));
        }
        let digest = crate::crypto::sha256(&body);
        serde_json::from_value(value)
            .map(|m| Self(m, digest))
            .map_err(|e| OAuthError::invalid_client_metadata(format!("invalid metadata: {e}")))
    }
}

fn policy(state: &AppState) -> RegistrationPolicy<'_> {
    RegistrationPolicy {
        scopes_supported: state.clients.scopes_supported.as_ref(),
        insecure_fetch: state.config.insecure_fetch,
        grants: state.grants.as_ref(),
    }
}

/// RFC 7591 §3.1.
/// `GET /register/challenge`: a proof-of-work challenge for one open
/// registration (`--registration pow`); harder for an address that asks
/// often.
pub async fn challenge(State(state): State<AppState>, ip: ClientIp) -> Result<Response> {
    if state.config.registration != RegistrationMode::Pow {
        return Err(OAuthError::new(
            404,
            "invalid_request",
            "registration needs no proof of work here",
        )
        .into());
    }
    let now = state.now();
    let recent = match ip.0 {
        Some(addr) => {
            let key = format!("register:{addr}");
            let n = state.agents.login_challenges.get(&key).unwrap_or(0) + 1;
            state.agents.login_challenges.insert(key, n);
            n
        }
        None => 1,
    };
    let (challenge, difficulty) = crate::agents::stamps::issue(&state.agents, recent, now)?;
    Ok(super::json_no_store(
        StatusCode::OK,
        &serde_json::json!({
            "challenge": challenge,
            "difficulty": difficulty,
            "expires_in": crate::agents::stamps::TTL,
            "algorithm": "leading zero bits of SHA-256(challenge || base64url(SHA-256(body)) || nonce); send PoW-Stamp: <challenge>:<nonce>",
        }),
    ))
}

pub async fn create(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: std::result::Result<MetadataBody, OAuthError>,
) -> Result<Response> {
    if let Some(addr) = ip.0
        && let Err(not_until) = state.registration_limiter.check_key(&addr)
    {
        return Err(OAuthError::too_many_requests(crate::clock::retry_after(&not_until)).into());
    }
    let now = state.now();
    // An initial access token is required in protected mode and welcome
    // in open mode: it marks the client as vouched for (kind
    // `initial_token`), which the resource registry may trust with
    // client_credentials. It is spent only once the metadata is valid.
    let initial_token = bearer_token(&headers);
    if initial_token.is_none() && state.config.registration == RegistrationMode::Protected {
        return Err(OAuthError::invalid_token("an initial access token is required").into());
    }
    let MetadataBody(request, body_hash) = body?;
    if initial_token.is_none() && state.config.registration == RegistrationMode::Pow {
        let stamp = headers.get("pow-stamp").and_then(|v| v.to_str().ok());
        crate::agents::stamps::check(&state.agents, stamp, &body_hash, now).await?;
    }
    // A token that names an owner registers an agent of that owner: its
    // metadata is the agent's (name, scope, public keys), not a client's.
    if let Some(token) = initial_token
        && let Some(owner_id) =
            store::initial_tokens::owner_of(&state.db, sha256(token.as_bytes())).await?
    {
        let new_agent = agent_request(&state, request, owner_id)?;
        spend_initial_token(&state, token, now).await?;
        return register_agent(&state, &ip, new_agent, now).await;
    }
    let metadata = ClientMetadata::validate(request, &policy(&state))?;
    let kind = match initial_token {
        Some(token) => {
            spend_initial_token(&state, token, now).await?;
            ClientKind::InitialToken
        }
        None => ClientKind::Dynamic,
    };

    let registered = register(
        &state.db,
        NewClient {
            metadata,
            kind,
            introspects: Vec::new(),
            manageable: true,
        },
        Requester {
            subject: None,
            ip: ip.to_audit(),
            via: "register",
        },
        now,
    )
    .await?;
    let Registered {
        record,
        secret,
        registration_access_token,
    } = registered;
    tracing::info!(client_id = %record.client_id, "client registered");
    trace_registration(&state, &record.client_id, Ok(&record.metadata));

    let mut body = registration_response(&state, &record)?;
    if let Some(obj) = body.as_object_mut() {
        if let Some(secret) = secret {
            obj.insert("client_secret".into(), json!(secret));
            obj.insert("client_secret_expires_at".into(), json!(0));
        }
        if let Some(token) = registration_access_token {
            obj.insert("registration_access_token".into(), json!(token));
        }
    }
    Ok(json_no_store(StatusCode::CREATED, &body))
}

async fn spend_initial_token(state: &AppState, token: &str, now: i64) -> Result<()> {
    if store::initial_tokens::consume(&state.db, sha256(token.as_bytes()), now).await? {
        Ok(())
    } else {
        Err(
            OAuthError::invalid_token("the initial access token is invalid, expired or used up")
                .into(),
        )
    }
}

/// An agent registration: `client_name`, `scope` (within what the server
/// offers) and its public keys in `jwks` (Ed25519 or P-256). Everything
/// else an agent is follows from being an agent (private_key_jwt, the
/// agent grants).
fn agent_request(
    state: &AppState,
    request: ClientMetadataRequest,
    owner_id: String,
) -> std::result::Result<crate::agents::NewAgent, OAuthError> {
    let bad = |why: String| OAuthError::invalid_client_metadata(why);
    let jwks = request.jwks.ok_or_else(|| {
        bad("an agent registers its public keys in jwks (Ed25519 or P-256)".into())
    })?;
    let keys = crate::agents::parse_keys(&jwks).map_err(|why| bad(format!("jwks: {why}")))?;
    if request
        .token_endpoint_auth_method
        .as_deref()
        .is_some_and(|m| m != "private_key_jwt")
    {
        return Err(bad("an agent authenticates with private_key_jwt".into()));
    }
    let scope = match &request.scope {
        Some(text) => Scope::parse(text).map_err(|e| OAuthError::invalid_scope(e.to_string()))?,
        None => state.clients.scopes_supported.clone().unwrap_or_default(),
    };
    if let Some(supported) = &state.clients.scopes_supported
        && let Some(extra) = scope.missing_from(supported).next()
    {
        return Err(bad(format!(
            "scope {extra:?} is not offered by this server"
        )));
    }
    Ok(crate::agents::NewAgent {
        name: request.client_name.unwrap_or_else(|| "agent".to_string()),
        owner_id,
        scope,
        resources: Vec::new(),
        keys: JwkSet { keys },
    })
}

/// RFC 7591 with an initial access token naming an owner: the client is
/// an agent of that owner, managed by the owner (CLI, console), so no
/// registration access token is issued.
async fn register_agent(
    state: &AppState,
    ip: &ClientIp,
    new_agent: crate::agents::NewAgent,
    now: i64,
) -> Result<Response> {
    let actor = ip.to_audit().unwrap_or_else(|| "register".into());
    let created =
        crate::agents::create(&state.db, state.grants.as_ref(), new_agent, now, &actor).await;
    let (agent, record) = match created {
        Ok(done) => done,
        Err(crate::agents::AgentError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(OAuthError::invalid_client_metadata(e.to_string()).into()),
    };
    let mut body = registration_response(state, &record)?;
    if let Some(obj) = body.as_object_mut() {
        obj.remove("registration_client_uri");
        obj.insert("agent_id".into(), json!(agent.id));
        obj.insert("owner".into(), json!(agent.owner_id));
    }
    Ok(json_no_store(StatusCode::CREATED, &body))
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3).
fn registration_response(state: &AppState, record: &ClientRecord) -> Result<Value> {
    let mut body =
        serde_json::to_value(&record.metadata).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("client_id".into(), json!(record.client_id));
        obj.insert(
            "client_id_issued_at".into(),
            json!(record.client_id_issued_at),
        );
        obj.insert(
            "registration_client_uri".into(),
            json!(
                state
                    .config
                    .endpoint(&format!("/register/{}", record.client_id))
            ),
        );
    }
    Ok(body)
}

/// RFC 7592 §2: the registration access token must match; every failure
/// is the same 401, so the endpoint is no oracle for client ids.
async fn authorize_management(
    state: &AppState,
    headers: &HeaderMap,
    client_id: &str,
) -> Result<ClientRecord> {
    let unauthorized = || OAuthError::invalid_token("invalid registration access token");
    let token = bearer_token(headers).ok_or_else(unauthorized)?;
    let record = store::clients::get(&state.db, client_id)
        .await?
        .ok_or_else(unauthorized)?;
    let ok = record
        .registration_access_token_hash
        .as_deref()
        .is_some_and(|hash| crate::crypto::verify_secret(token, hash));
    if !ok {
        return Err(unauthorized().into());
    }
    Ok(record)
}

/// RFC 7592 §2.1 read.
pub async fn read(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let record = authorize_management(&state, &headers, &client_id).await?;
    Ok(json_no_store(
        StatusCode::OK,
        &registration_response(&state, &record)?,
    ))
}

/// RFC 7592 §2.2 update: the request replaces the metadata.
pub async fn update(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    body: std::result::Result<MetadataBody, OAuthError>,
) -> Result<Response> {
    let mut record = authorize_management(&state, &headers, &client_id).await?;
    let MetadataBody(request, _) = body?;
    if request.client_id.as_deref() != Some(client_id.as_str()) {
        return Err(OAuthError::invalid_client_metadata(
            "client_id must be present and match the client (RFC 7592 §2.2)",
        )
        .into());
    }
    let metadata = ClientMetadata::validate(request, &policy(&state))
        .and_then(|metadata| {
            match metadata.token_endpoint_auth_method == record.metadata.token_endpoint_auth_method
            {
                true => Ok(metadata),
                false => Err(OAuthError::invalid_client_metadata(
                    "token_endpoint_auth_method cannot change; register a new client instead",
                )),
            }
        })
        .inspect_err(|e| trace_registration(&state, &client_id, Err(e)))?;
    let now = state.now();
    let event = AuditEvent {
        at: now,
        event: "client.updated",
        client_id: Some(client_id.clone()),
        subject: None,
        ip: ip.to_audit(),
        detail: json!({ "client_name": metadata.client_name, "grant_types": metadata.grant_types }),
    };
    if !store::clients::update_audited(&state.db, &client_id, &metadata, now, event).await? {
        return Err(OAuthError::invalid_token("invalid registration access token").into());
    }
    state.clients.forget(&client_id).await;
    trace_registration(&state, &client_id, Ok(&metadata));
    record.metadata = metadata;
    Ok(json_no_store(
        StatusCode::OK,
        &registration_response(&state, &record)?,
    ))
}

/// The registration step of a client's trace (the connection doctor):
/// what it declared, or why an RFC 7592 update was refused. A refused
/// first registration has no client to trace: the client sees the error.
fn trace_registration(
    state: &AppState,
    client_id: &str,
    outcome: std::result::Result<&ClientMetadata, &OAuthError>,
) {
    let (refused, detail) = match outcome {
        Ok(metadata) => (None, Some(crate::doctor::declared(metadata))),
        Err(e) => (
            Some(format!(
                "{}: {}",
                e.error,
                e.description.as_deref().unwrap_or("")
            )),
            None,
        ),
    };
    state.clients.doctor.record(crate::doctor::Step {
        client_id,
        attempt: None,
        step: crate::doctor::step::REGISTER,
        refused: refused.as_deref(),
        fix: refused
            .is_some()
            .then_some("the client sends valid metadata (RFC 7591 §2) in its update"),
        detail: detail.as_deref(),
    });
}

/// RFC 7592 §2.3 delete.
pub async fn delete(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Response> {
    authorize_management(&state, &headers, &client_id).await?;
    let event = AuditEvent {
        at: state.now(),
        event: "client.deleted",
        client_id: Some(client_id.clone()),
        subject: None,
        ip: ip.to_audit(),
        detail: json!({}),
    };
    store::clients::delete_audited(&state.db, &client_id, event).await?;
    state.clients.forget(&client_id).await;
    tracing::info!(client_id = %client_id, "client deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
