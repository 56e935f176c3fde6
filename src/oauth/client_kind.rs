//! Who made a client. The resource registry decides by kind which clients
//! may get a token for a resource with no user (`client_credentials`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Created by an operator with `agentauth client create`.
    Operator,
    /// Registered at /register with an initial access token.
    InitialToken,
    /// Registered at /register by anyone (open registration).
    Dynamic,
    /// A client ID metadata document: its URL is its client_id.
    MetadataDocument,
    /// An agent, owned by a user, made by an operator (`agentauth agent
    /// create`) or registered with an initial access token an operator
    /// minted for its owner.
    Agent,
    /// An agent its owner made in the console, which no operator vouched
    /// for (with `--signup`, anyone's): not [`Self::VOUCHED`], so it gets
    /// tokens with no user (`client_credentials`) only from resources
    /// whose operator lists `owner_agent` (SECURITY.md, "Agents made by
    /// owners").
    OwnerAgent,
}

impl ClientKind {
    /// Who may use `client_credentials` where the operator did not say:
    /// the clients someone vouched for.
    pub const VOUCHED: [ClientKind; 3] = [Self::Operator, Self::InitialToken, Self::Agent];

    /// Whether a client of this kind is an agent (it has an agent row:
    /// owner, status, limits).
    pub fn is_agent(self) -> bool {
        matches!(self, Self::Agent | Self::OwnerAgent)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::InitialToken => "initial_token",
            Self::Dynamic => "dynamic",
            Self::MetadataDocument => "metadata_document",
            Self::Agent => "agent",
            Self::OwnerAgent => "owner_agent",
        }
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "operator" => Self::Operator,
            "initial_token" => Self::InitialToken,
            "dynamic" => Self::Dynamic,
            "metadata_document" => Self::MetadataDocument,
            "agent" => Self::Agent,
            "owner_agent" => Self::OwnerAgent,
            other => return Err(format!("unknown client kind {other:?}")),
        })
    }
}
