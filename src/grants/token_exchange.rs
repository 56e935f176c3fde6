//! Delegation by token exchange (RFC 8693): an agent trades a subject
//! token (a user's access token issued to the agent or naming it in
//! `aud`, or a passport naming it, from an agent of the same owner) for an
//! access token for one resource, acting for the subject. The result names
//! the agent in `act` (nested for chains, at most
//! `--max-delegation-depth` actors), carries no more scope than the
//! subject token and the agent both allow, honours `may_act`, and never
//! outlives the subject token. Errors per RFC 8693 §2.2.2: a subject token
//! that is invalid or unacceptable is `invalid_request`; a target the
//! agent may not have is `invalid_target`.

use agentauth_resource::claims::{Actor, PASSPORT_TOKEN_TYPE};

use super::Env;
use super::agent::{agent_of, check_proof_key, check_resources};
use super::{
    ACCESS_TOKEN_TYPE, AccessTokenRequest, Grant, GrantFuture, TOKEN_EXCHANGE, TokenRequest,
    TokenResponse, issue_access_token, resources, target_scope,
};
use crate::error::{Error, OAuthError};
use crate::oauth::client_metadata::{AuthMethod, ClientMetadata};
use crate::oauth::resource::ResourceUri;
use crate::oauth::scope::Scope;
use crate::tokens::{live_access_token, live_passport};

pub struct TokenExchange;

impl Grant for TokenExchange {
    fn grant_type(&self) -> &'static str {
        TOKEN_EXCHANGE
    }

    fn for_agents(&self) -> bool {
        true
    }

    fn check_client(&self, metadata: &ClientMetadata) -> Result<(), String> {
        if metadata.token_endpoint_auth_method != AuthMethod::PrivateKeyJwt {
            return Err("token exchange is for agents (private_key_jwt)".into());
        }
        Ok(())
    }

    fn handle<'a>(&'a self, cx: &'a Env<'a>, request: TokenRequest<'a>) -> GrantFuture<'a> {
        Box::pin(run(cx, request))
    }
}

/// What the exchange learned from the subject token.
struct Subject {
    sub: String,
    scope: Scope,
    act: Option<Actor>,
    may_act: Option<Actor>,
    exp: i64,
    /// The subject token's `jti`: revoking it revokes what was derived.
    jti: String,
    /// The subject token is a passport: no person took part, so the
    /// result is a token with no user in the loop, and the registry's
    /// `client_credentials` rule for the client's kind applies to it
    /// (SECURITY.md, "Agents made by owners").
    no_user: bool,
    /// RFC 9396: the approved details the subject token carries.
    details: Option<Vec<serde_json::Value>>,
}

fn unacceptable(why: &'static str) -> Error {
    OAuthError::invalid_request(why).into()
}

async fn subject(
    cx: &Env<'_>,
    req: &TokenRequest<'_>,
    agent_id: &str,
    owner_id: &str,
) -> Result<Subject, Error> {
    let token = req.params.require("subject_token")?;
    let token_type = req.params.require("subject_token_type")?;
    let me = format!(
        "{}{agent_id}",
        crate::store::agents::audience_prefix(&cx.config.issuer)
    );
    match token_type {
        ACCESS_TOKEN_TYPE => {
            let claims = live_access_token(cx.tokens, token)
                .await?
                .ok_or_else(|| unacceptable("the subject token is not an active access token"))?;
            // Issued to the agent (the user consented to it), or for it.
            if claims.client_id != agent_id && !claims.aud.contains(&me) {
                return Err(unacceptable(
                    "the subject token was not issued to or for this agent",
                ));
            }
            Ok(Subject {
                sub: claims.sub,
                scope: Scope::parse(claims.scope.as_deref().unwrap_or("")).unwrap_or_default(),
                act: claims.act,
                may_act: claims.may_act,
                exp: claims.exp,
                jti: claims.jti,
                no_user: false,
                details: claims.authorization_details,
            })
        }
        PASSPORT_TOKEN_TYPE => {
            let passport = live_passport(cx.tokens, token)
                .await?
                .ok_or_else(|| unacceptable("the subject token is not an active passport"))?;
            if passport.owner != owner_id {
                return Err(unacceptable(
                    "the passport is of an agent with another owner",
                ));
            }
            let for_me = passport.sub == agent_id
                || passport
                    .aud
                    .as_ref()
                    .is_some_and(|aud| aud.contains(agent_id) || aud.contains(&me));
            if !for_me {
                return Err(unacceptable("the passport does not name this agent"));
            }
            Ok(Subject {
                sub: passport.sub,
                scope: Scope::parse(passport.scope.as_deref().unwrap_or("")).unwrap_or_default(),
                act: None,
                may_act: None,
                exp: passport.exp,
                jti: passport.jti,
                no_user: true,
                details: None,
            })
        }
        _ => Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {ACCESS_TOKEN_TYPE} or {PASSPORT_TOKEN_TYPE}"
        ))
        .into()),
    }
}

async fn run(cx: &Env<'_>, req: TokenRequest<'_>) -> Result<TokenResponse, Error> {
    let agent = agent_of(cx, &req).await?;
    let x5t = check_proof_key(cx, &req).await?;
    if req.params.get("actor_token").is_some() {
        return Err(unacceptable(
            "the actor is the authenticated agent; actor_token is not accepted",
        ));
    }
    if let Some(t) = req.params.get("requested_token_type")
        && t != ACCESS_TOKEN_TYPE
    {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type must be {ACCESS_TOKEN_TYPE}"
        ))
        .into());
    }
    let subject = subject(cx, &req, &agent.id, &agent.owner_id).await?;

    // RFC 8693 §4.4: a subject token that says who may act for it.
    if let Some(may) = &subject.may_act
        && may.sub != agent.id
        && may.agent_id.as_deref() != Some(agent.id.as_str())
    {
        return Err(unacceptable(
            "may_act in the subject token does not name this agent",
        ));
    }
    let act = if subject.sub == agent.id && subject.act.is_none() {
        // The agent's own passport: a token for itself, no delegation.
        None
    } else {
        let actor = Actor {
            sub: agent.id.clone(),
            iss: None,
            client_id: None,
            agent_id: Some(agent.id.clone()),
            act: subject.act.map(Box::new),
        };
        if actor.chain().count() > cx.config.max_delegation_depth {
            return Err(OAuthError::invalid_request(format!(
                "the delegation chain would exceed {} actors",
                cx.config.max_delegation_depth
            ))
            .into());
        }
        Some(actor)
    };

    // RFC 8693 §2.1: `resource` and `audience` both name where the token
    // is for; both must be registered resources.
    let mut requested = resources(req.params)?;
    for audience in req.params.get_all("audience") {
        requested.push(
            ResourceUri::parse(audience)
                .map_err(|why| OAuthError::invalid_target(format!("{why}: {audience:?}")))?,
        );
    }
    let targets = cx.resources.registry.resolve(&requested)?;
    check_resources(&agent, &targets)?;
    // A token that acts for another agent (its passport was the subject)
    // reaches no further than that agent may: a sibling without limits
    // does not widen them (found by the black-box check).
    if crate::store::agents::is_agent_id(&subject.sub) && subject.sub != agent.id {
        match cx.agents.get(&subject.sub).await? {
            Some(limited) => check_resources(&limited, &targets)?,
            None => return Err(unacceptable("the subject agent no longer exists")),
        }
    }
    if subject.no_user {
        // A passport traded for an access token is client_credentials by
        // another name: only where the operator lets this kind act alone.
        targets.check_client_credentials(req.client.client.kind)?;
    }
    let allowed = subject
        .scope
        .intersection(&Scope::parse(&agent.scope).unwrap_or_default());
    let scope = target_scope(&targets, req.params, &allowed)?;
    let resources = targets.uris();
    let remaining = subject.exp - req.now;
    if remaining <= 0 {
        return Err(unacceptable("the subject token has expired"));
    }
    // RFC 9396 in token exchange: an approval passes on whole or
    // narrowed, never widened, and never made up: details come only from
    // an owner's approval (the subject token's).
    let details = match (
        req.params.get("authorization_details"),
        subject.details.clone(),
    ) {
        (None, inherited) => inherited,
        (Some(text), Some(granted)) => {
            let asked = cx.resources.registry.check_details(text)?;
            if !crate::resources::details::within(&asked, &granted) {
                return Err(OAuthError::invalid_authorization_details(
                    "authorization_details must be among those the subject token carries",
                )
                .into());
            }
            Some(asked)
        }
        (Some(_), None) => {
            return Err(OAuthError::invalid_authorization_details(
                "the subject token carries no approved details, and token exchange cannot add any",
            )
            .into());
        }
    };
    if details.is_some() && req.jkt().is_none() {
        return Err(OAuthError::invalid_dpop_proof(
            "a token carrying approved authorization details is DPoP-bound; send a DPoP proof",
        )
        .into());
    }
    let mut token = AccessTokenRequest::plain(
        TOKEN_EXCHANGE,
        &subject.sub,
        &agent.id,
        &scope,
        &resources,
        &req,
    );
    token.act = act.clone();
    token.agent_id = Some(&agent.id);
    token.owner = Some(&agent.owner_id);
    token.max_ttl = Some(match details {
        Some(_) => remaining.min(cx.config.approval_token_ttl),
        None => remaining,
    });
    token.authorization_details = details;
    token.x5t_s256 = x5t;
    let actors = act.as_ref().map(|a| {
        a.chain()
            .map(|a| a.sub.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let mut issued = issue_access_token(cx, token).await?;
    // Every exchange is recorded before its token is handed out: with its
    // subject token's `jti`, so that revoking the subject token (or the
    // consent or refresh family it came from) revokes what was derived
    // from it (SECURITY.md, "Delegations"); and, when an agent acts for
    // someone (`act`), so that both the agent's owner and the subject see
    // it on their grants pages and may revoke it. An agent's own passport
    // traded for a token has no actors and is not listed.
    crate::store::delegations::insert(
        cx.db,
        crate::store::delegations::DelegationRow {
            jti: issued.jti.clone(),
            owner_id: agent.owner_id.clone(),
            subject: subject.sub.clone(),
            agent_id: agent.id.clone(),
            actors: actors.unwrap_or_default(),
            resource: resources
                .iter()
                .map(ResourceUri::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            scope: scope.to_string(),
            issued_at: req.now,
            expires_at: issued.exp,
            revoked_at: None,
            parent_jti: Some(subject.jti.clone()),
        },
    )
    .await?;
    issued.response.issued_token_type = Some(ACCESS_TOKEN_TYPE);
    Ok(issued.response)
}
