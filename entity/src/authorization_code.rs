use sea_orm::entity::prelude::*;

/// An authorization code (stored as its SHA-256), bound to client, user,
/// redirect URI, PKCE challenge, scope, resources and optionally a DPoP key.
/// `family_id`/`access_jti` record what its redemption issued, so that a
/// replay can revoke it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "authorization_codes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub code_hash: Vec<u8>,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    pub resources: Json,
    pub dpop_jkt: Option<String>,
    pub auth_time: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
    pub family_id: Option<String>,
    pub access_jti: Option<String>,
    pub access_exp: Option<i64>,
    /// RFC 9396: the approved `authorization_details` (a JSON array).
    pub authorization_details: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
