//! Creating a client, the one way: `agentauth client create` (an operator
//! client) and `POST /register` (RFC 7591: a dynamic or vouched-for
//! client) both come here with metadata already validated. The secret,
//! when the method uses one, and the RFC 7592 registration access token
//! are random, returned once, and stored only as SHA-256 hashes; the
//! record and its audit event are written in one transaction.

use serde_json::json;

use crate::crypto::{random_id, random_token, sha256};
use crate::oauth::client_kind::ClientKind;
use crate::oauth::client_metadata::ClientMetadata;
use crate::store::audit::AuditEvent;
use crate::store::clients::ClientRecord;
use crate::store::{self, Db, StoreError};

/// A client to create.
pub struct NewClient {
    pub metadata: ClientMetadata,
    pub kind: ClientKind,
    /// Resources whose tokens it may introspect (`*`: any).
    pub introspects: Vec<String>,
    /// Whether it gets an RFC 7592 registration access token.
    pub manageable: bool,
}

/// Who asked, for the audit trail.
pub struct Requester {
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub via: &'static str,
}

/// The stored client and the credentials shown once.
pub struct Registered {
    pub record: ClientRecord,
    pub secret: Option<String>,
    pub registration_access_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] crate::crypto::RandomError),
}

pub async fn register(
    db: &Db,
    new: NewClient,
    by: Requester,
    now: i64,
) -> Result<Registered, RegisterError> {
    let client_id = random_id()?;
    let secret = new
        .metadata
        .token_endpoint_auth_method
        .uses_secret()
        .then(random_token)
        .transpose()?;
    let registration_access_token = new.manageable.then(random_token).transpose()?;
    let record = ClientRecord {
        client_id: client_id.clone(),
        client_secret_hash: secret.as_ref().map(|s| sha256(s.as_bytes()).to_vec()),
        registration_access_token_hash: registration_access_token
            .as_ref()
            .map(|t| sha256(t.as_bytes()).to_vec()),
        metadata: new.metadata,
        client_id_issued_at: now,
        kind: new.kind,
        introspects: new.introspects,
    };
    let event = AuditEvent {
        at: now,
        event: "client.registered",
        client_id: Some(client_id),
        subject: by.subject,
        ip: by.ip,
        detail: json!({
            "via": by.via,
            "kind": record.kind,
            "client_name": record.metadata.client_name,
            "grant_types": record.metadata.grant_types,
            "token_endpoint_auth_method": record.metadata.token_endpoint_auth_method,
        }),
    };
    store::clients::insert_audited(db, &record, event).await?;
    Ok(Registered {
        record,
        secret,
        registration_access_token,
    })
}

impl From<RegisterError> for crate::error::Error {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Store(e) => e.into(),
            RegisterError::Random(e) => e.into(),
        }
    }
}
