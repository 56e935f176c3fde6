use sea_orm::entity::prelude::*;

/// A registered OAuth client (RFC 7591). `metadata` is the validated client
/// metadata as JSON; secrets are stored only as SHA-256 hashes.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "clients")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub client_id: String,
    pub client_secret_hash: Option<Vec<u8>>,
    pub registration_access_token_hash: Option<Vec<u8>>,
    pub metadata: Json,
    pub client_id_issued_at: i64,
    /// `operator`, `initial_token`, `dynamic` or `agent`.
    pub kind: String,
    /// Resource URIs whose tokens the client may introspect (`*`: any).
    pub introspects: Option<Json>,
    pub updated_at: i64,
    /// When it last got a token (at most a day stale); reaping idle
    /// self-registered clients reads it.
    pub last_used_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
