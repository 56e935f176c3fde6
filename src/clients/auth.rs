//! Client authentication at the token, introspection and revocation
//! endpoints (RFC 6749 §2.3, RFC 7523 §2.2, OpenID Connect Core §9).
//! The HTTP layer decodes `Authorization: Basic` into [`Basic`]; the rest
//! comes from the form.

use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;

use super::Clients;
use crate::crypto::{sha256, verify_secret};
use crate::error::{Error, OAuthError};
use crate::oauth::client_assertion::{self, JWT_BEARER};
use crate::oauth::client_metadata::AuthMethod;
use crate::oauth::form::OAuthForm;
use crate::store::clients::ClientRecord;

/// RFC 6749 §2.3.1 credentials from `Authorization: Basic`, decoded.
#[derive(Debug, Clone)]
pub struct Basic {
    pub client_id: String,
    pub secret: String,
}

/// A client that proved who it is (or, for `none`, only said so).
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    pub client: Arc<ClientRecord>,
    pub method: AuthMethod,
}

impl AuthenticatedClient {
    pub fn client_id(&self) -> &str {
        &self.client.client_id
    }
}

/// Whether a public client (`none`) may use the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Public {
    Allowed,
    Refused,
}

enum Presented<'a> {
    Basic {
        client_id: String,
        secret: String,
    },
    Post {
        client_id: &'a str,
        secret: &'a str,
    },
    Assertion {
        client_id: String,
        assertion: &'a str,
    },
    None {
        client_id: &'a str,
    },
}

/// Authenticates the client of this request with exactly one method, the
/// one it registered.
pub async fn authenticate(
    clients: &Clients,
    basic: Option<Basic>,
    form: &OAuthForm,
    public: Public,
    ip: Option<std::net::IpAddr>,
) -> Result<AuthenticatedClient, Error> {
    let presented = presented(basic, form)?;
    let (client_id, method) = match &presented {
        Presented::Basic { client_id, .. } => (client_id.as_str(), AuthMethod::ClientSecretBasic),
        Presented::Post { client_id, .. } => (*client_id, AuthMethod::ClientSecretPost),
        Presented::Assertion { client_id, .. } => (client_id.as_str(), AuthMethod::PrivateKeyJwt),
        Presented::None { client_id } => (*client_id, AuthMethod::None),
    };
    if let Err(retry_after) = clients.document_fetch_allowed(client_id, ip) {
        let mut e = OAuthError::invalid_client(format!(
            "too many client metadata documents fetched for your address; retry in {retry_after} s"
        ));
        e.retry_after = Some(retry_after);
        return Err(e.into());
    }
    let Some(client) = clients.get(client_id).await? else {
        if method.uses_secret() {
            // Spend the same hashing work as for a known client.
            let _ = sha256(client_id.as_bytes());
        }
        // A metadata-document client whose document failed: say why, and
        // when it will be fetched again (issue 12 item 13). The URL is the
        // client's own, so this reveals nothing about other clients.
        if let Some((why, retry_after)) = super::document::failure(clients, client_id).await {
            let mut e = OAuthError::invalid_client(format!(
                "the client's metadata document was not accepted: {why}"
            ));
            e.retry_after = Some(retry_after);
            return Err(e.into());
        }
        return Err(OAuthError::invalid_client("client authentication failed").into());
    };
    // The kill switch: a disabled (or deleted) agent authenticates nowhere.
    if client.kind.is_agent() && !clients.agents.is_active(&client.client_id).await? {
        return Err(OAuthError::invalid_client("the agent is disabled").into());
    }
    // The same answer as for an unknown client: no client-id oracle.
    if !client.metadata.accepts_auth_method(method) {
        return Err(OAuthError::invalid_client("client authentication failed").into());
    }
    match presented {
        Presented::Basic { secret, .. } => check_secret(&client, &secret)?,
        Presented::Post { secret, .. } => check_secret(&client, secret)?,
        Presented::Assertion { assertion, .. } => {
            check_assertion(clients, &client, assertion).await?
        }
        Presented::None { .. } => {
            if public == Public::Refused {
                return Err(OAuthError::invalid_client(
                    "this endpoint requires client authentication",
                )
                .into());
            }
        }
    }
    Ok(AuthenticatedClient { client, method })
}

/// Exactly one method per request (RFC 6749 §2.3).
fn presented(basic: Option<Basic>, form: &OAuthForm) -> Result<Presented<'_>, OAuthError> {
    let secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let count = usize::from(basic.is_some())
        + usize::from(secret.is_some())
        + usize::from(assertion.is_some());
    if count > 1 {
        return Err(OAuthError::invalid_request(
            "use exactly one client authentication method",
        ));
    }
    let form_client_id = form.get("client_id");
    if let Some(Basic { client_id, secret }) = basic {
        if form_client_id.is_some_and(|id| id != client_id) {
            return Err(OAuthError::invalid_client(
                "client_id differs from the authenticated client",
            ));
        }
        return Ok(Presented::Basic { client_id, secret });
    }
    if let Some(secret) = secret {
        let client_id = form_client_id
            .ok_or_else(|| OAuthError::invalid_client("client_secret without client_id"))?;
        return Ok(Presented::Post { client_id, secret });
    }
    if let Some(assertion) = assertion {
        if form.get("client_assertion_type") != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type must be {JWT_BEARER}"
            )));
        }
        let client_id = client_assertion::unverified_issuer(assertion)
            .ok_or_else(|| OAuthError::invalid_client("client_assertion is not a valid JWT"))?;
        if form_client_id.is_some_and(|id| id != client_id) {
            return Err(OAuthError::invalid_client(
                "client_id differs from the assertion issuer",
            ));
        }
        return Ok(Presented::Assertion {
            client_id,
            assertion,
        });
    }
    match form_client_id {
        Some(client_id) => Ok(Presented::None { client_id }),
        None => Err(OAuthError::invalid_client(
            "client authentication is required",
        )),
    }
}

fn check_secret(client: &ClientRecord, secret: &str) -> Result<(), OAuthError> {
    let ok = client
        .client_secret_hash
        .as_deref()
        .is_some_and(|hash| verify_secret(secret, hash));
    if ok {
        Ok(())
    } else {
        Err(OAuthError::invalid_client("client authentication failed"))
    }
}

async fn check_assertion(
    clients: &Clients,
    client: &ClientRecord,
    assertion: &str,
) -> Result<(), Error> {
    let now = clients.clock.now();
    // RFC 7523 §3 (3): our issuer, or our token endpoint as RFC 7523
    // allows; never the URL of another endpoint (see the README).
    let token_endpoint = clients.config.endpoint("/token");
    let audiences = [clients.config.issuer.as_str(), token_endpoint.as_str()];
    let registered_alg = client.metadata.token_endpoint_auth_signing_alg.as_deref();
    let verify = |keys: &JwkSet| {
        client_assertion::verify(
            assertion,
            &client.client_id,
            keys,
            &audiences,
            registered_alg,
            now,
        )
    };
    let claims = match (&client.metadata.jwks, &client.metadata.jwks_uri) {
        (Some(keys), _) => verify(keys),
        (None, Some(uri)) => {
            let keys = clients.jwks.get(uri, false).await?;
            match verify(&keys) {
                // The client may have rotated its keys: refetch once.
                Err(_) => verify(clients.jwks.get(uri, true).await?.as_ref()),
                ok => ok,
            }
        }
        (None, None) => Err("client has no registered keys"),
    }
    .map_err(OAuthError::invalid_client)?;
    // RFC 7523 §3 item 7: the jti is single-use, across every node.
    let key = format!("client_assertion:{}:{}", client.client_id, claims.jti);
    if !clients.replay.spend_once(key, claims.spent_until()).await? {
        return Err(OAuthError::invalid_client("client assertion jti was already used").into());
    }
    Ok(())
}
