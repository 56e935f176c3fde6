use sea_orm::entity::prelude::*;

/// A proof-of-work login request: a site asking an agent to log in.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_requests")]
pub struct Model {
    /// 128-bit random, base64url: what the site polls and listens on.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The site: a confidential client.
    pub site_client_id: String,
    /// The agent the site named, if any (otherwise any agent may answer).
    pub agent_id: Option<String>,
    /// Space-separated scopes the site asks for.
    pub scope: String,
    /// `pending`, `approved` or `denied` (expiry is read from `expires_at`).
    pub status: String,
    /// The current single-use challenge, and the agent it was issued to.
    pub challenge: Option<String>,
    pub challenge_agent: Option<String>,
    /// Leading zero bits the challenge needs.
    pub difficulty: Option<i32>,
    pub created_at: i64,
    pub expires_at: i64,
    /// Least seconds between polls (RFC 8628 §3.5 `interval`).
    pub poll_interval: i32,
    pub last_poll_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// The agent that approved or denied, and the key it proved.
    pub resolved_agent: Option<String>,
    pub agent_jkt: Option<String>,
    /// When the passport went to the site (once).
    pub delivered_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
