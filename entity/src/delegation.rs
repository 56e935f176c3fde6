use sea_orm::entity::prelude::*;

/// An access token issued by token exchange on behalf of an owner's
/// account or agent: what the owner sees on the grants page and may
/// revoke (by `jti`). Kept until the token expires.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "delegations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub jti: String,
    pub owner_id: String,
    /// The token's `sub`: the owner, or one of the owner's agents.
    pub subject: String,
    /// The agent acting.
    pub agent_id: String,
    /// The actor chain, outermost first, space-separated.
    pub actors: String,
    /// The audiences, space-separated.
    pub resource: String,
    pub scope: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// The subject token's `jti`: revoking it revokes this token too.
    pub parent_jti: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
