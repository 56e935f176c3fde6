use sea_orm::entity::prelude::*;

/// A refresh token (stored as its SHA-256). Tokens of one grant share a
/// `family_id`; `generation` orders rotations (never `iat`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_hash: Vec<u8>,
    pub family_id: String,
    pub generation: i32,
    pub client_id: String,
    pub user_id: String,
    pub scope: String,
    pub resources: Json,
    pub dpop_jkt: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The access token issued with this refresh token.
    pub access_jti: String,
    pub access_exp: i64,
    /// After rotation, for the grace window only: the token response the
    /// rotation produced, AES-256-GCM under a KEK-derived key (the token
    /// hash is the associated data). Cleared by upkeep.
    pub retry_sealed: Option<Vec<u8>>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
