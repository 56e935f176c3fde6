use sea_orm::entity::prelude::*;

/// Where an issued token's status is (list and index), kept until the
/// token expires, for tokens revoked through something else than
/// themselves (a family, a code, a delegation, a kill).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "status_tokens")]
pub struct Model {
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
