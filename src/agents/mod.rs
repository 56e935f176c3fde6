//! Agents: identities of their own, owned by a user, holding their own
//! keys (Ed25519 or P-256), scoped, revocable in one step.
//!
//! An agent is also a client (same id, kind `agent`, or `owner_agent`
//! when its owner made it in the console; `private_key_jwt` with its keys
//! as `jwks`), so it authenticates at `/token` like any client;
//! [`store::agents`](crate::store::agents) holds its owner, status and
//! limits. Every token issued to or through an agent names it
//! (`agent_id`, and `act` when it acts for someone), and every check of
//! such a token asks [`Agents::get`] whether it is still active: the
//! answer is at most a second old on any node, and immediate on the node
//! that flipped it.

pub mod bridge;
pub mod federation;
pub mod login;
pub mod stamps;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use moka::future::Cache;
use serde_json::json;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::random_id;
use crate::fetch::jwks::Jwks;
use crate::oauth::client_kind::ClientKind;
use crate::oauth::client_metadata::{
    ClientMetadata, ClientMetadataRequest, GrantRules, RegistrationPolicy,
};
use crate::oauth::resource::ResourceUri;
use crate::oauth::scope::Scope;
use crate::replay::Replay;
use crate::resources::ResourceRegistry;
use crate::store::Db;
use crate::store::agents::{AgentRow, ID_PREFIX};
use crate::store::audit::AuditEvent;
use crate::store::clients::ClientRecord;
use crate::store::{self, StoreError};

/// How stale an agent's status may be on a node other than the one that
/// changed it: the kill switch's propagation bound.
pub const STATUS_TTL: Duration = Duration::from_secs(1);

// The kill switch's cut-off covers what nodes with a stale status issue.
const _: () = assert!(STATUS_TTL.as_secs() as i64 <= store::agents::PROPAGATION_SECS);

/// Most keys one agent holds.
pub const MAX_KEYS: usize = 8;

/// The agent domain: agents' status, the proof-of-work login hub and
/// limits, the bridge CA, and the trusted external issuers. Built once
/// by the application state; handlers and grants reach agents through it.
pub struct Agents {
    pub config: Arc<Config>,
    pub db: Db,
    pub clock: SharedClock,
    /// Agents by id, at most [`STATUS_TTL`] stale (the kill switch's bound).
    status: Cache<String, Option<Arc<AgentRow>>>,
    /// Bridge-certificate CAs by epoch.
    pub bridge: bridge::ca::CaRing,
    /// Single-use nonces that bridge-certificate proofs sign.
    pub bridge_nonces: bridge::nonce::NonceMint,
    /// Which agent keys a live bridge certificate certifies, a second stale.
    bridge_bindings: bridge::BindingCache,
    /// Wakes SSE listeners of login requests.
    pub login_hub: login::LoginHub,
    /// Login requests a site may create and challenges an agent may
    /// fetch, per minute each (keys `site:<id>`, `agent:<id>`).
    pub login_limiter: DefaultKeyedRateLimiter<String>,
    /// Open login event streams (SECURITY.md, "Proof-of-work login").
    pub login_streams: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
    /// Challenges fetched in the last minute, per site and per agent
    /// (`site:<id>`, `agent:<id>`): the difficulty rises with it.
    pub login_challenges: moka::sync::Cache<String, u64>,
    /// MAC key of registration proof-of-work stamps.
    stamp_key: [u8; 32],
    /// Trusted external issuers for the JWT bearer grant.
    pub federation: federation::Federation,
    /// Their fetched keys (shared with client `jwks_uri`s).
    jwks: Jwks,
    /// Spent stamps and assertion `jti`s.
    pub replay: Arc<Replay>,
}

/// What [`Agents`] is built from besides the shared three (config, store,
/// clock): the pieces the application state loads or derives first.
pub struct Parts {
    pub bridge: bridge::ca::CaRing,
    pub bridge_nonces: bridge::nonce::NonceMint,
    pub stamp_key: [u8; 32],
    pub federation: federation::Federation,
    pub jwks: Jwks,
    pub replay: Arc<Replay>,
}

impl Agents {
    pub fn new(config: Arc<Config>, db: Db, clock: SharedClock, parts: Parts) -> Self {
        let Parts {
            bridge,
            bridge_nonces,
            stamp_key,
            federation,
            jwks,
            replay,
        } = parts;
        Self {
            login_limiter: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(config.login_rate_per_minute).unwrap_or(NonZeroU32::MIN),
            )),
            config,
            db,
            clock,
            status: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(STATUS_TTL)
                .build(),
            bridge,
            bridge_nonces,
            bridge_bindings: bridge::binding_cache(),
            login_hub: Default::default(),
            login_streams: Default::default(),
            login_challenges: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            stamp_key,
            federation,
            jwks,
            replay,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such agent")]
    NotFound,
    #[error("no such user {0:?}")]
    NoOwner(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] crate::crypto::RandomError),
}

/// What an agent is created from.
pub struct NewAgent {
    pub name: String,
    pub owner_id: String,
    pub scope: Scope,
    pub resources: Vec<String>,
    pub keys: JwkSet,
}

/// An agent key: Ed25519 or P-256, public only, with a `kid` (its RFC 7638
/// thumbprint when it has none) and, when it names one, the matching `alg`.
pub fn check_key(value: &serde_json::Value) -> Result<Jwk, String> {
    if agentauth_resource::jwk::has_private_members(value) {
        return Err("an agent key must be public (no \"d\")".into());
    }
    let mut jwk: Jwk =
        serde_json::from_value(value.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => "EdDSA",
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => "ES256",
        _ => return Err("an agent key must be Ed25519 (OKP) or P-256 (EC)".into()),
    };
    agentauth_resource::jwk::check_public_jwk(&jwk)?;
    if jwk
        .common
        .key_algorithm
        .is_some_and(|a| a.to_string() != alg)
    {
        return Err(format!("the key's alg must be {alg}"));
    }
    if jwk.common.key_id.as_deref().is_none_or(str::is_empty) {
        jwk.common.key_id = Some(agentauth_resource::jwk::thumbprint(&jwk)?);
    }
    Ok(jwk)
}

/// An agent key pasted by its owner: a public JWK, or a PEM
/// `PUBLIC KEY` (SubjectPublicKeyInfo) of an Ed25519 or P-256 key.
pub fn key_from_text(text: &str) -> Result<Jwk, String> {
    use base64::Engine as _;
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
    use x509_parser::prelude::FromDer;
    let text = text.trim();
    if text.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        return check_key(&value);
    }
    let body: String = text
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|rest| rest.split("-----END PUBLIC KEY-----").next())
        .ok_or("paste a public JWK, or a PEM block that begins with -----BEGIN PUBLIC KEY-----")?
        .split_whitespace()
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "the PEM block is not base64")?;
    let spki = match x509_parser::x509::SubjectPublicKeyInfo::from_der(&der) {
        Ok(([], spki)) => spki,
        _ => return Err("the PEM block is not a SubjectPublicKeyInfo".into()),
    };
    let raw = spki.subject_public_key.data.as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = if spki.algorithm.algorithm == OID_SIG_ED25519 && raw.len() == 32 {
        json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(raw) })
    } else if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|c| c == OID_EC_P256)
        && raw.len() == 65
        && raw[0] == 4
    {
        json!({ "kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]) })
    } else {
        return Err("an agent key must be Ed25519 or P-256".into());
    };
    check_key(&jwk)
}

/// A JWK, or a JWK set, as the keys of an agent.
pub fn parse_keys(value: &serde_json::Value) -> Result<Vec<Jwk>, String> {
    let list: Vec<&serde_json::Value> = match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return Err("keys must be an array".into()),
        None => vec![value],
    };
    list.into_iter().map(check_key).collect()
}

/// RFC 7638 thumbprints of the agent's keys.
pub fn thumbprints(client: &ClientRecord) -> Vec<String> {
    client
        .metadata
        .jwks
        .iter()
        .flat_map(|set| set.keys.iter())
        .filter_map(|k| agentauth_resource::jwk::thumbprint(k).ok())
        .collect()
}

/// The client metadata of an agent: `private_key_jwt` with its keys, the
/// agent grants, its scopes.
fn client_metadata(
    name: &str,
    scope: &Scope,
    keys: &JwkSet,
    grants: &(dyn GrantRules + Sync),
) -> Result<ClientMetadata, AgentError> {
    if keys.keys.is_empty() || keys.keys.len() > MAX_KEYS {
        return Err(AgentError::Invalid(format!(
            "an agent holds between 1 and {MAX_KEYS} keys"
        )));
    }
    let request = ClientMetadataRequest {
        client_name: Some(name.to_string()),
        grant_types: Some(
            grants
                .agent_grants()
                .iter()
                .map(|g| g.to_string())
                .collect(),
        ),
        token_endpoint_auth_method: Some("private_key_jwt".into()),
        jwks: Some(serde_json::to_value(keys).map_err(|e| AgentError::Invalid(e.to_string()))?),
        scope: (!scope.is_empty()).then(|| scope.to_string()),
        ..Default::default()
    };
    ClientMetadata::validate(
        request,
        &RegistrationPolicy {
            scopes_supported: None,
            insecure_fetch: false,
            grants,
        },
    )
    .map_err(|e| AgentError::Invalid(e.description.unwrap_or_default().into_owned()))
}

fn event(
    now: i64,
    event: &'static str,
    agent_id: &str,
    actor: &str,
    detail: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        at: now,
        event,
        client_id: Some(agent_id.to_string()),
        subject: Some(actor.to_string()),
        ip: None,
        detail,
    }
}

/// Creates an agent an operator vouched for (`agentauth agent create`, or
/// `/register` with an initial access token an operator minted for its
/// owner) and its client row, in one transaction. `actor` names who did
/// it in the audit log (`cli`, or the registering address).
pub async fn create(
    db: &store::Db,
    grants: &(dyn GrantRules + Sync),
    new: NewAgent,
    now: i64,
    actor: &str,
) -> Result<(AgentRow, ClientRecord), AgentError> {
    insert(db, grants, new, ClientKind::Agent, now, actor).await
}

/// Creates an agent its owner made with no operator involved (the
/// console): bounded by the resource registry first ([`bound_by_registry`]),
/// and of kind `owner_agent`, which gets tokens with no user
/// (`client_credentials`) only from resources whose operator lists that
/// kind (SECURITY.md, "Agents made by owners").
pub async fn create_by_owner(
    db: &store::Db,
    grants: &(dyn GrantRules + Sync),
    registry: &ResourceRegistry,
    mut new: NewAgent,
    now: i64,
    actor: &str,
) -> Result<(AgentRow, ClientRecord), AgentError> {
    bound_by_registry(registry, &mut new)?;
    insert(db, grants, new, ClientKind::OwnerAgent, now, actor).await
}

/// What the registry allows an agent no operator vouched for: each of its
/// resources must be registered (any URI when the operator opened
/// resources with `--open-resources`; never another agent's audience),
/// and is recorded in its registered spelling; each scope must be offered
/// by one of its resources, or, with none named, by some registered
/// resource (RFC 7591 §2 `scope`, the server's `scopes_supported`).
pub fn bound_by_registry(
    registry: &ResourceRegistry,
    new: &mut NewAgent,
) -> Result<(), AgentError> {
    let mut resources: Vec<String> = Vec::with_capacity(new.resources.len());
    let mut offered: Option<Scope> = Some(Scope::default());
    for r in &new.resources {
        let uri =
            ResourceUri::parse(r).map_err(|why| AgentError::Invalid(format!("{why}: {r:?}")))?;
        let (registered, scopes) = match registry.get(uri.as_str()) {
            Some(resource) => (resource.uri.clone(), resource.scopes.clone()),
            None if registry.is_open() && !registry.is_agent_audience(uri.as_str()) => {
                (uri.as_str().to_string(), None)
            }
            None => {
                return Err(AgentError::Invalid(format!(
                    "{r:?} is not a resource registered at this server"
                )));
            }
        };
        offered = match (offered, scopes) {
            (Some(all), Some(these)) => Some(all.union(&these)),
            _ => None,
        };
        if !resources.contains(&registered) {
            resources.push(registered);
        }
    }
    let (offered, by) = if resources.is_empty() {
        (
            registry.scopes_supported(),
            "any resource registered at this server",
        )
    } else {
        (offered, "the resources you chose")
    };
    if let Some(offered) = offered
        && let Some(extra) = new.scope.missing_from(&offered).next()
    {
        return Err(AgentError::Invalid(format!(
            "scope {extra:?} is not offered by {by}"
        )));
    }
    new.resources = resources;
    Ok(())
}

async fn insert(
    db: &store::Db,
    grants: &(dyn GrantRules + Sync),
    new: NewAgent,
    kind: ClientKind,
    now: i64,
    actor: &str,
) -> Result<(AgentRow, ClientRecord), AgentError> {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AgentError::Invalid(
            "an agent name has 1 to 200 characters".into(),
        ));
    }
    for r in &new.resources {
        ResourceUri::parse(r).map_err(|why| AgentError::Invalid(format!("{why}: {r:?}")))?;
    }
    if store::users::by_id(db, &new.owner_id).await?.is_none() {
        return Err(AgentError::NoOwner(new.owner_id));
    }
    let metadata = client_metadata(name, &new.scope, &new.keys, grants)?;
    let id = format!("{ID_PREFIX}{}", random_id()?);
    let agent = AgentRow {
        id: id.clone(),
        name: name.to_string(),
        owner_id: new.owner_id,
        active: true,
        scope: new.scope.to_string(),
        resources: new.resources,
        created_at: now,
        updated_at: now,
        disabled_at: None,
        valid_after: 0,
    };
    let client = ClientRecord {
        client_id: id.clone(),
        client_secret_hash: None,
        registration_access_token_hash: None,
        metadata,
        client_id_issued_at: now,
        kind,
        introspects: Vec::new(),
    };
    store::agents::insert(
        db,
        &agent,
        &client,
        event(
            now,
            "agent.created",
            &id,
            actor,
            json!({ "owner": agent.owner_id, "name": agent.name, "scope": agent.scope,
                    "resources": agent.resources, "kind": kind,
                    "keys": thumbprints(&client) }),
        ),
    )
    .await?;
    Ok((agent, client))
}

/// Replaces an agent's keys (add-key, remove-key).
pub async fn set_keys(
    db: &store::Db,
    grants: &(dyn GrantRules + Sync),
    agent_id: &str,
    keys: JwkSet,
    now: i64,
    actor: &str,
) -> Result<(), AgentError> {
    let agent = store::agents::get(db, agent_id)
        .await?
        .ok_or(AgentError::NotFound)?;
    let scope = Scope::parse(&agent.scope).unwrap_or_default();
    let metadata = client_metadata(&agent.name, &scope, &keys, grants)?;
    let kids: Vec<_> = keys
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    // A key gone from the set ends what was issued while it was held
    // (SECURITY.md, "Kill, then re-enable"): compared by thumbprint, so
    // renaming a kid is not a removal.
    let kept: Vec<String> = keys
        .keys
        .iter()
        .filter_map(|k| agentauth_resource::jwk::thumbprint(k).ok())
        .collect();
    let Some(old) = store::clients::get(db, agent_id).await? else {
        return Err(AgentError::NotFound);
    };
    // Each removed key becomes a CAEP credential-change event for the
    // registered receivers (`store::events::signals`).
    let removed_keys: Vec<serde_json::Value> = old
        .metadata
        .jwks
        .iter()
        .flat_map(|set| set.keys.iter())
        .filter_map(|k| {
            let jkt = agentauth_resource::jwk::thumbprint(k).ok()?;
            (!kept.contains(&jkt)).then(|| json!({ "kid": k.common.key_id, "jkt": jkt }))
        })
        .collect();
    let removed_key = !removed_keys.is_empty();
    if !store::agents::set_keys(
        db,
        agent_id,
        &metadata,
        removed_key,
        now,
        event(
            now,
            "agent.keys_changed",
            agent_id,
            actor,
            json!({ "kids": kids, "removed": removed_key, "removed_keys": removed_keys }),
        ),
    )
    .await?
    {
        return Err(AgentError::NotFound);
    }
    Ok(())
}

impl Agents {
    /// An agent, at most [`STATUS_TTL`] stale (fresh on this node after
    /// [`Agents::forget`]). `None`: no such agent.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<AgentRow>>, StoreError> {
        let db = self.db.clone();
        let key = id.to_string();
        self.status
            .try_get_with_by_ref(id, async move {
                store::agents::get(&db, &key).await.map(|a| a.map(Arc::new))
            })
            .await
            .map_err(|e| StoreError::unavailable(e.to_string()))
    }

    /// Whether the agent exists and is active.
    pub async fn is_active(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.get(id).await?.is_some_and(|a| a.active))
    }

    /// Whether something the agent got at `iat` is still honoured: the
    /// agent exists, is active, and `iat` is not before its cut-off.
    pub async fn honours(&self, id: &str, iat: i64) -> Result<bool, StoreError> {
        Ok(self.get(id).await?.is_some_and(|a| a.honours(iat)))
    }

    /// Drops this node's cached view of an agent's status (the
    /// application state's `forget_agent` drops its client row too).
    pub async fn forget(&self, id: &str) {
        self.status.invalidate(id).await;
    }
}
