use sea_orm::entity::prelude::*;

/// An agent: an identity owned by a user. Its client row (same id, kind
/// `agent`) holds its keys; this row its owner, status and limits.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub owner_id: String,
    /// `active` or `disabled`.
    pub status: String,
    /// Space-separated scopes the agent may ask for.
    pub scope: String,
    /// Resource URIs the agent may get tokens for (empty: any registered).
    pub resources: Json,
    pub created_at: i64,
    pub updated_at: i64,
    pub disabled_at: Option<i64>,
    /// The kill switch's cut-off: what the agent got with an `iat` (or a
    /// certificate's `notBefore`) before this second is dead for good, even
    /// after the agent is enabled again. Set on disabling and on key removal.
    pub tokens_valid_after: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
