//! RFC 9068 JWT access-token claims, with room to grow: RFC 8693 `act` and
//! `may_act`, the agent and owner an agent's token names, and any extension
//! claim a grant adds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// RFC 9068 §2.1 media type, sent as `typ` (the short form, §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// RFC 7519 `aud`: one string, or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn from_list(mut list: Vec<String>) -> Self {
        if list.len() == 1 {
            Self::One(list.remove(0))
        } else {
            Self::Many(list)
        }
    }

    pub fn contains(&self, value: &str) -> bool {
        match self {
            Self::One(a) => a == value,
            Self::Many(list) => list.iter().any(|a| a == value),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let slice: &[String] = match self {
            Self::One(a) => std::slice::from_ref(a),
            Self::Many(list) => list,
        };
        slice.iter().map(String::as_str)
    }
}

/// RFC 7800 confirmation claim: the key the token is bound to, as an RFC
/// 9449 §6 JWK thumbprint and, when an agentauth bridge certificate
/// certifies that key, the RFC 8705 §3.1 certificate thumbprint too (one
/// key, one certificate: the token works with a DPoP proof made with the
/// key, or over mutual TLS with the certificate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl Confirmation {
    /// RFC 8705 §3: whether `certificate_der` (the client certificate of
    /// the TLS connection) is the one the token is bound to.
    pub fn matches_certificate(&self, certificate_der: &[u8]) -> bool {
        use base64::Engine as _;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certificate_der);
        self.x5t_s256.as_deref().is_some_and(|x5t| {
            x5t == base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
        })
    }
}

/// RFC 8693 §4.1 `act` (and §4.4 `may_act`): a party that acts, or may act,
/// for the subject. Nested `act` is the chain of earlier actors, most
/// recent outermost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// agentauth: set when the actor is one of our agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The chain from the current actor back to the first one.
    pub fn chain(&self) -> impl Iterator<Item = &Actor> {
        std::iter::successors(Some(self), |a| a.act.as_deref())
    }
}

/// RFC 9068 §2.2 claims. Numeric dates are integers: a token whose `exp`
/// is a string fails to deserialize and is rejected (RFC 8725 §3.x; the
/// jsonwebtoken CVE-2026-25537 class).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// RFC 8693 §4.1: who acts for `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// RFC 8693 §4.4: who may act for `sub` in a later exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<Actor>,
    /// agentauth: the agent this token was issued to or through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// agentauth: the human account that owns that agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Token Status List (draft-ietf-oauth-status-list §6.1): where the
    /// token's status is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::status::StatusClaim>,
    /// RFC 9396 §9.1: the rich authorization details the owner approved
    /// (each an object with a `type`); see [`crate::details`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<Value>>,
    /// Any other claim, kept as sent.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl AccessTokenClaims {
    /// The token's scopes, in order.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// The scopes of `required` the token lacks (empty: it has them all).
    pub fn missing_scopes<'a>(&self, required: &[&'a str]) -> Vec<&'a str> {
        required
            .iter()
            .copied()
            .filter(|r| !self.has_scope(r))
            .collect()
    }
}

/// JWT `typ` of an agent passport.
pub const PASSPORT_TYP: &str = "agent-passport+jwt";

/// RFC 8693 token type of an agent passport.
pub const PASSPORT_TOKEN_TYPE: &str = "urn:agentauth:params:token-type:passport";

/// An agent passport: a signed statement of who an agent is, whose it is,
/// what it may do, and which key it holds. A site verifies it against the
/// issuer's JWKS like any JWT (typ [`PASSPORT_TYP`]), and should ask the
/// agent to prove the `cnf.jkt` key (a DPoP proof, or a signature).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassportClaims {
    pub iss: String,
    /// The agent.
    pub sub: String,
    /// The site it is for, when the agent named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// The agent's owner (a user id of the issuer).
    pub owner: String,
    /// The agent's name, as its owner gave it.
    pub agent_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The key the agent holds.
    pub cnf: Confirmation,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// The same as `sub`; present so that code reading access tokens'
    /// `agent_id` reads passports the same way.
    pub agent_id: String,
    /// Token Status List §6.1: where the passport's status is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::status::StatusClaim>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_dates_are_rejected() {
        let bad = r#"{"iss":"i","sub":"s","aud":"a","client_id":"c","jti":"j","iat":1,"exp":"2"}"#;
        assert!(serde_json::from_str::<AccessTokenClaims>(bad).is_err());
    }

    #[test]
    fn act_chain_and_extensions_round_trip() {
        let text = r#"{"iss":"i","sub":"alice","aud":["a","b"],"client_id":"c","jti":"j","iat":1,"exp":2,
            "act":{"sub":"agent-2","act":{"sub":"agent-1"}},"agent_id":"agent-2","owner":"alice","x_custom":7}"#;
        let claims: AccessTokenClaims = serde_json::from_str(text).unwrap();
        let chain: Vec<&str> = claims
            .act
            .as_ref()
            .unwrap()
            .chain()
            .map(|a| a.sub.as_str())
            .collect();
        assert_eq!(chain, ["agent-2", "agent-1"]);
        assert_eq!(claims.extra["x_custom"], 7);
        assert!(claims.aud.contains("b"));
        let again: AccessTokenClaims =
            serde_json::from_str(&serde_json::to_string(&claims).unwrap()).unwrap();
        assert_eq!(again, claims);
    }
}
