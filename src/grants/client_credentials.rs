//! RFC 6749 §4.4 client credentials grant: a confidential client acting
//! as itself. `sub` is the client_id.

use super::{AccessTokenRequest, TokenResponse, issue_access_token, requested_scope, resources};
use crate::app::State;
use crate::error::{Error, OAuthError};
use crate::http::OAuthForm;
use crate::http::client_auth::AuthenticatedClient;
use crate::oauth::client_metadata::AuthMethod;
use agentauth_resource::dpop::VerifiedProof;

pub async fn handle(
    state: &State,
    client: &AuthenticatedClient,
    form: &OAuthForm,
    proof: Option<&VerifiedProof>,
    ip: Option<String>,
) -> Result<TokenResponse, Error> {
    // §4.4: "The client credentials grant type MUST only be used by
    // confidential clients."
    if client.method == AuthMethod::None {
        return Err(OAuthError::unauthorized_client(
            "client_credentials requires client authentication",
        )
        .into());
    }
    let scope = requested_scope(form, &client.client.metadata.scope())?;
    let resources = resources(form)?;
    let issued = issue_access_token(
        state,
        AccessTokenRequest {
            grant_type: "client_credentials",
            subject: client.client_id(),
            client_id: client.client_id(),
            scope: &scope,
            resources: &resources,
            jkt: proof.map(|p| p.jkt.as_str()),
            ip,
        },
    )
    .await?;
    Ok(issued.response)
}
