use sea_orm::entity::prelude::*;

/// A passkey (WebAuthn credential) an owner signs in with. Only public
/// material: the credential id and its COSE public key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "passkeys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub user_id: String,
    #[sea_orm(unique)]
    pub credential_id: Vec<u8>,
    /// The COSE_Key as the authenticator sent it.
    pub public_key: Vec<u8>,
    /// COSE algorithm: -7 ES256, -8 EdDSA, -257 RS256.
    pub alg: i64,
    pub sign_count: i64,
    pub name: String,
    pub backup_eligible: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
