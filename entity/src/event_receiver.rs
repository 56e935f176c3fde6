use sea_orm::entity::prelude::*;

/// A receiver of security events (OpenID SSF 1.0 push, RFC 8935),
/// registered by an operator. `authorization_sealed` is the
/// `Authorization` header value we present when pushing, sealed under a
/// key derived from the KEK; never shown, never logged.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_receivers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub endpoint_url: String,
    /// The `aud` of the SETs pushed to it.
    pub audience: String,
    pub authorization_sealed: Option<Vec<u8>>,
    pub created_at: i64,
    /// SETs it accepted (202).
    pub delivered: i64,
    /// SETs dropped because its queue was full.
    pub dropped: i64,
    /// Failed pushes in a row (the backoff's exponent).
    pub failures: i32,
    /// No push before this time (Unix milliseconds).
    pub retry_at_ms: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_delivered_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
