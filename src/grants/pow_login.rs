//! The proof-of-work login grant (`urn:agentauth:params:grant-type:pow-login`):
//! a site polls a login request it made, as a device-flow client polls
//! (RFC 8628 §3.4-3.5): `authorization_pending`, `slow_down`,
//! `access_denied`, `expired_token`, or, once, the agent's passport for the
//! site (`aud` = the site's client_id; `issued_token_type` names it).
//! The site must still be allowed the grant when the passport is
//! delivered ([`crate::agents::login::check_site`]), as on the event stream.

use agentauth_resource::claims::PASSPORT_TOKEN_TYPE;

use super::Env;
use super::{Grant, GrantFuture, TokenRequest, TokenResponse};
use crate::agents::login::check_site;
use crate::error::{Error, OAuthError};
use crate::oauth::client_metadata::{AuthMethod, ClientMetadata};
use crate::oauth::grant_type::POW_LOGIN;
use crate::oauth::scope::Scope;
use crate::store::audit::AuditEvent;
use crate::store::login_requests::{self, APPROVED, DENIED, LoginRequestRow};
use agentauth_resource::claims::Audience;
use serde_json::json;

pub struct PowLogin;

impl Grant for PowLogin {
    fn grant_type(&self) -> &'static str {
        POW_LOGIN
    }

    fn check_client(&self, metadata: &ClientMetadata) -> Result<(), String> {
        if metadata.token_endpoint_auth_method == AuthMethod::None {
            return Err("the pow-login grant is for confidential clients (sites)".into());
        }
        Ok(())
    }

    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(cx, request))
    }
}

async fn run(cx: &Env<'_>, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let id = req.params.require("login_request_id")?;
    let row = login_requests::get(cx.db, id)
        .await?
        .filter(|r| r.site_client_id == req.client.client.client_id)
        .ok_or_else(|| OAuthError::invalid_grant("no such login request for this client"))?;
    if !login_requests::record_poll(cx.db, &row, req.now).await? {
        return Err(OAuthError::slow_down(format!(
            "poll at most every {} seconds",
            row.poll_interval
        ))
        .into());
    }
    match outcome(cx, &row, req.now).await? {
        Outcome::Pending => {
            Err(OAuthError::authorization_pending("the agent has not answered yet").into())
        }
        Outcome::Denied => Err(OAuthError::access_denied("the agent denied the login").into()),
        Outcome::Unauthorized(e) => Err(e.into()),
        Outcome::Expired => Err(OAuthError::expired_token("the login request expired").into()),
        Outcome::AlreadyDelivered => Err(OAuthError::invalid_grant(
            "the passport of this login request was already delivered",
        )
        .into()),
        Outcome::Delivered {
            passport,
            expires_in,
            scope,
        } => Ok(TokenResponse {
            access_token: passport,
            issued_token_type: Some(PASSPORT_TOKEN_TYPE),
            token_type: "N_A",
            expires_in,
            scope,
            refresh_token: None,
            authorization_details: None,
        }),
    }
}

/// Where a login request stands, as the site learns it.
pub enum Outcome {
    Pending,
    Denied,
    Expired,
    /// Approved, and this caller won the one delivery: the passport.
    Delivered {
        passport: String,
        expires_in: i64,
        scope: Option<String>,
    },
    /// Approved, and the passport already went to the site.
    AlreadyDelivered,
    /// Approved, but the site may not (or no longer) run proof-of-work
    /// login: nothing is delivered, on either channel.
    Unauthorized(OAuthError),
}

impl Outcome {
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Denied => "denied",
            Outcome::Expired => "expired",
            Outcome::Delivered { .. } | Outcome::AlreadyDelivered => "approved",
            Outcome::Unauthorized(_) => "refused",
        }
    }
}

/// The outcome of `row` for its site, delivering the passport if this
/// caller is the first to see the approval (one conditional write: SSE
/// listeners and pollers on any node race for it, one wins).
pub async fn outcome(cx: &Env<'_>, row: &LoginRequestRow, now: i64) -> Result<Outcome, Error> {
    match row.status.as_str() {
        DENIED => return Ok(Outcome::Denied),
        APPROVED => {}
        _ if row.expires_at <= now => return Ok(Outcome::Expired),
        _ => return Ok(Outcome::Pending),
    }
    if row.delivered_at.is_some() {
        return Ok(Outcome::AlreadyDelivered);
    }
    let (Some(agent_id), Some(jkt)) = (&row.resolved_agent, &row.agent_jkt) else {
        return Err(Error::Internal(format!(
            "approved login request {} has no agent",
            row.id
        )));
    };
    // The site's right to the grant, again at delivery: the same rule for
    // SSE listeners and pollers, and for requests made before a change.
    let site = cx
        .clients
        .get(&row.site_client_id)
        .await?
        .ok_or_else(|| OAuthError::unauthorized_client("the site is no longer registered"));
    if let Err(e) = site.and_then(|site| check_site(cx.config, &site)) {
        return Ok(Outcome::Unauthorized(e));
    }
    // The kill switch: a disabled agent's approval delivers nothing.
    let agent = match cx.agents.get(agent_id).await? {
        Some(a) if a.active => a,
        _ => return Ok(Outcome::Denied),
    };
    if !login_requests::claim_delivery(cx.db, &row.id, now).await? {
        return Ok(Outcome::AlreadyDelivered);
    }
    let allowed = Scope::parse(&agent.scope).unwrap_or_default();
    let asked = Scope::parse(&row.scope).unwrap_or_default();
    let scope = asked.intersection(&allowed);
    let aud = Some(Audience::One(row.site_client_id.clone()));
    let (passport, claims) = super::passport::sign(
        cx,
        &agent,
        agentauth_resource::claims::Confirmation {
            jkt: jkt.clone(),
            x5t_s256: None,
        },
        &scope,
        aud,
        now,
        None,
    )
    .await?;
    cx.audit.record(AuditEvent {
        at: now,
        event: "login_request.delivered",
        client_id: Some(row.site_client_id.clone()),
        subject: Some(agent.id.clone()),
        ip: None,
        detail: json!({ "login_request_id": row.id, "jti": claims.jti, "scope": claims.scope,
                        "jkt": claims.cnf.jkt, "exp": claims.exp }),
    });
    Ok(Outcome::Delivered {
        passport,
        expires_in: cx.config.passport_ttl,
        scope: claims.scope,
    })
}
