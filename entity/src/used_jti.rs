use sea_orm::entity::prelude::*;

/// Replay store for single-use JWT identifiers (client assertions, DPoP
/// proofs). `key` is namespaced, e.g. `client_assertion:{client_id}:{jti}`;
/// a unique-key insert is the atomic "first use wins".
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "used_jtis")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
