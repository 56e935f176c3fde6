use sea_orm::entity::prelude::*;

/// A revoked JWT access token (RFC 7009), kept until it would have expired.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "revoked_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub jti: String,
    pub client_id: String,
    pub revoked_at: i64,
    pub expires_at: i64,
    /// Its Token Status List entry, when it has one.
    pub status_list: Option<i64>,
    pub status_idx: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
