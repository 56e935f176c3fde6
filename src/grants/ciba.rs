//! The CIBA grant (`urn:openid:params:grant-type:ciba`, OpenID CIBA Core
//! §10.1): a client redeems a backchannel request its owner answered.
//! Poll-mode clients ask every `interval` seconds; ping-mode clients ask
//! once they are notified. The answers are §11's: `authorization_pending`,
//! `slow_down`, `expired_token`, `access_denied`, or, once, the token.
//!
//! What the token is:
//! - `sub` is the owner who approved; an agent's request carries `act`
//!   (the agent) and `agent_id`, as a delegated token does;
//! - with approved `authorization_details` it is one approved action: it
//!   carries them, must be DPoP-bound (the request's proof, asked for
//!   before the delivery is claimed so that a client without one can
//!   retry), and lives at most `--approval-token-ttl` seconds;
//! - no refresh token, ever: an approval is for now, and a refresh would
//!   give it a second life. A standing grant is what the authorization
//!   code flow is for.

use super::{AccessTokenRequest, Env, Grant, GrantFuture, TokenRequest, TokenResponse};
use crate::crypto::sha256;
use crate::error::{Error, OAuthError};
use crate::oauth::client_metadata::{AuthMethod, ClientMetadata};
use crate::oauth::grant_type::CIBA;
use crate::oauth::resource::ResourceUri;
use crate::oauth::scope::Scope;
use crate::store::audit::AuditEvent;
use crate::store::backchannel::{self, APPROVED, BackchannelRow, DENIED};
use agentauth_resource::claims::Actor;
use serde_json::json;

pub struct Ciba;

impl Grant for Ciba {
    fn grant_type(&self) -> &'static str {
        CIBA
    }

    fn check_client(&self, metadata: &ClientMetadata) -> Result<(), String> {
        if metadata.token_endpoint_auth_method == AuthMethod::None {
            return Err("the CIBA grant is for confidential clients".into());
        }
        Ok(())
    }

    /// An agent asks its owner before acting.
    fn for_agents(&self) -> bool {
        true
    }

    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(cx, request))
    }
}

async fn run(cx: &Env<'_>, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let auth_req_id = req.params.require("auth_req_id")?;
    let row = backchannel::by_hash(cx.db, sha256(auth_req_id.as_bytes()))
        .await?
        .filter(|r| r.client_id == req.client.client_id())
        .ok_or_else(|| OAuthError::invalid_grant("no such auth_req_id for this client"))?;
    // Answered or expired requests say so at once; the poll rate is a
    // pending request's (§11 `slow_down` means "still pending").
    match row.status.as_str() {
        DENIED => return Err(OAuthError::access_denied("the owner denied the request").into()),
        APPROVED if row.delivered_at.is_some() => {
            return Err(OAuthError::invalid_grant(
                "the token of this request was already delivered",
            )
            .into());
        }
        APPROVED => {}
        _ if row.expires_at <= req.now => {
            return Err(OAuthError::expired_token("the request expired unanswered").into());
        }
        _ => {
            if !backchannel::record_poll(cx.db, &row, req.now).await? {
                return Err(OAuthError::slow_down(format!(
                    "polled sooner than every {} seconds; wait 5 seconds longer between polls",
                    row.poll_interval
                ))
                .into());
            }
            return Err(OAuthError::authorization_pending("the owner has not answered yet").into());
        }
    }
    deliver(cx, &req, &row).await
}

/// The approved request's token, once.
async fn deliver(
    cx: &Env<'_>,
    req: &TokenRequest<'_>,
    row: &BackchannelRow,
) -> Result<TokenResponse, Error> {
    let details: Option<Vec<serde_json::Value>> = row
        .authorization_details
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|_| {
            Error::Internal(format!("backchannel request {} holds bad details", row.id))
        })?;
    if details.is_some() && req.jkt().is_none() {
        return Err(OAuthError::invalid_dpop_proof(
            "a token for approved authorization details is DPoP-bound; send a DPoP proof",
        )
        .into());
    }
    let Some(user_id) = row.user_id.as_deref() else {
        return Err(Error::Internal(format!(
            "backchannel request {} was approved by nobody",
            row.id
        )));
    };
    // The owner, the agent and the client must still be there: a kill or
    // a deletion between the approval and the poll delivers nothing.
    if crate::store::users::by_id(cx.db, user_id).await?.is_none() {
        return Err(OAuthError::access_denied("the owner no longer exists").into());
    }
    let (act, x5t) = match &row.agent_id {
        Some(agent_id) => {
            let agent = super::agent::agent_of(cx, req).await?;
            if &agent.id != agent_id || agent.owner_id != user_id {
                return Err(OAuthError::access_denied("the agent changed hands").into());
            }
            let x5t = super::agent::check_proof_key(cx, req).await?;
            let actor = Actor {
                sub: agent.id.clone(),
                iss: None,
                client_id: None,
                agent_id: Some(agent.id.clone()),
                act: None,
            };
            (Some(actor), x5t)
        }
        None => (None, None),
    };
    let resources: Vec<ResourceUri> = serde_json::from_str::<Vec<String>>(&row.resources)
        .map_err(|_| {
            Error::Internal(format!(
                "backchannel request {} holds bad resources",
                row.id
            ))
        })?
        .iter()
        .filter_map(|r| ResourceUri::parse(r).ok())
        .collect();
    let scope = Scope::parse(&row.scope).unwrap_or_default();
    // The delivery is claimed before signing: a token is issued at most
    // once, and a failure after the claim loses only this request.
    if !backchannel::claim_delivery(cx.db, &row.id, req.now).await? {
        return Err(
            OAuthError::invalid_grant("the token of this request was already delivered").into(),
        );
    }
    let with_details = details.is_some();
    let issued = super::issue_access_token(
        cx,
        AccessTokenRequest {
            x5t_s256: x5t,
            act,
            agent_id: row.agent_id.as_deref(),
            max_ttl: with_details.then_some(cx.config.approval_token_ttl),
            authorization_details: details,
            ..AccessTokenRequest::plain(
                CIBA,
                user_id,
                req.client.client_id(),
                &scope,
                &resources,
                req,
            )
        },
    )
    .await?;
    cx.audit.record(AuditEvent {
        at: req.now,
        event: "backchannel.delivered",
        client_id: Some(row.client_id.clone()),
        subject: Some(user_id.to_string()),
        ip: req.ip.clone(),
        detail: json!({ "request": row.id, "jti": issued.jti, "agent_id": row.agent_id,
                        "authorization_details": with_details }),
    });
    Ok(issued.response)
}
