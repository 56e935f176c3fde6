use sea_orm::entity::prelude::*;

/// A WebAuthn ceremony in progress: the browser holds the ceremony id in
/// a cookie, this row its SHA-256 and the challenge. Redeemed once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webauthn_challenges")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id_hash: Vec<u8>,
    /// `register` or `login`.
    pub purpose: String,
    /// The account a registration is for.
    pub user_id: Option<String>,
    pub challenge: Vec<u8>,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
