//! Seeding shared by the load examples (`#[path]`-included): a public
//! code-flow client, a user, and `count` fresh authorization codes
//! written straight into the server's database, so a load run starts at
//! the token endpoint without driving sign-in pages.

use agentauth::crypto::{random_id, random_token, sha256};
use agentauth::oauth::client_metadata::{
    ClientMetadata, ClientMetadataRequest, RegistrationPolicy,
};
use agentauth::store::{self, clients::ClientRecord, grants::CodeRow, users::User};
use base64::Engine as _;

pub const REDIRECT: &str = "http://127.0.0.1/cb";

pub struct Seeded {
    pub client_id: String,
    /// The PKCE verifier every seeded code was issued for.
    pub verifier: String,
    pub codes: Vec<String>,
}

pub async fn code_flow(db: &store::Db, count: usize, now: i64) -> anyhow::Result<Seeded> {
    let metadata = ClientMetadata::validate(
        ClientMetadataRequest {
            client_name: Some("flow load".into()),
            grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
            redirect_uris: Some(vec![REDIRECT.into()]),
            token_endpoint_auth_method: Some("none".into()),
            scope: Some("read".into()),
            ..Default::default()
        },
        &RegistrationPolicy {
            scopes_supported: None,
            insecure_fetch: false,
            grants: &agentauth::grants::Registry::standard(),
        },
    )
    .map_err(|e| anyhow::anyhow!("{:?}", e.description))?;
    let client_id = random_id()?;
    store::clients::insert(
        db,
        &ClientRecord {
            client_id: client_id.clone(),
            client_secret_hash: None,
            registration_access_token_hash: None,
            metadata,
            client_id_issued_at: now,
            kind: agentauth::oauth::client_kind::ClientKind::Operator,
            introspects: Vec::new(),
        },
    )
    .await?;
    let user_id = random_id()?;
    store::users::insert(
        db,
        User {
            id: user_id.clone(),
            username: format!("load-{user_id}"),
            password_hash: "unused".into(),
            created_at: now,
            admin: false,
        },
    )
    .await?;

    let verifier = random_token()?;
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
    let codes: Vec<String> = (0..count)
        .map(|_| random_token())
        .collect::<Result<_, _>>()?;
    let rows = codes
        .iter()
        .map(|c| CodeRow {
            code_hash: sha256(c.as_bytes()).to_vec(),
            client_id: client_id.clone(),
            user_id: user_id.clone(),
            redirect_uri: REDIRECT.into(),
            code_challenge: challenge.clone(),
            scope: "read".into(),
            resources: serde_json::json!([]),
            dpop_jkt: None,
            auth_time: now,
            expires_at: now + 3600,
            consumed_at: None,
            family_id: None,
            access_jti: None,
            access_exp: None,
            authorization_details: None,
        })
        .collect();
    store::grants::insert_codes(db, rows).await?;
    Ok(Seeded {
        client_id,
        verifier,
        codes,
    })
}
