use sea_orm::entity::prelude::*;

/// An agent a token names (its `agent_id`, an actor of its `act` chain,
/// or its subject), with the token's status index: what a kill revokes.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "status_agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub agent_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub jti: String,
    pub list_id: i64,
    pub idx: i64,
    pub iat: i64,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
