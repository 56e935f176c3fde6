//! RFC 9068 JWT access tokens: the claims, compact JWS signing with a
//! pre-parsed key, and verification with the pinned algorithm.

use serde::{Deserialize, Serialize};

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
}

/// RFC 7800 / RFC 9449 §6 confirmation claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
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
}
