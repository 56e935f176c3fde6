//! The proof-of-work login grant (`urn:agentauth:params:grant-type:pow-login`):
//! a site polls a login request it made, as a device-flow client polls
//! (RFC 8628 §3.4-3.5): `authorization_pending`, `slow_down`,
//! `access_denied`, `expired_token`, or, once, the agent's passport for the
//! site (`aud` = the site's client_id; `issued_token_type` names it).
//! The site must still be allowed the grant when the passport is
//! delivered ([`crate::login::check_site`]), as on the event stream.

use agentauth_resource::claims::PASSPORT_TOKEN_TYPE;

use super::{Grant, GrantFuture, POW_LOGIN, TokenRequest, TokenResponse};
use crate::error::{Error, OAuthError};
use crate::login::{Outcome, outcome};
use crate::oauth::client_metadata::{AuthMethod, ClientMetadata};
use crate::state::State;
use crate::store::login_requests;

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

    fn handle<'a>(&'a self, state: &'a State, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(state, request))
    }
}

async fn run(state: &State, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let id = req.params.require("login_request_id")?;
    let row = login_requests::get(&state.db, id)
        .await?
        .filter(|r| r.site_client_id == req.client.client.client_id)
        .ok_or_else(|| OAuthError::invalid_grant("no such login request for this client"))?;
    if !login_requests::record_poll(&state.db, &row, req.now).await? {
        return Err(OAuthError::slow_down(format!(
            "poll at most every {} seconds",
            row.poll_interval
        ))
        .into());
    }
    match outcome(state, &row, req.now).await? {
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
        }),
    }
}
