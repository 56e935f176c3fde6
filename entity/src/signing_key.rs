use sea_orm::entity::prelude::*;

/// A token-signing key. The private key is PKCS#8 DER sealed with
/// AES-256-GCM under the key-encryption key; `alg` is pinned per key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    pub alg: String,
    pub private_key_sealed: Vec<u8>,
    pub public_jwk: Json,
    pub created_at: i64,
    /// Published from creation; signs from this instant on.
    pub activates_at: i64,
    /// Set when a successor activates: the key leaves the JWKS after this.
    pub retire_after: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
