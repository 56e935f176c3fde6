use sea_orm::entity::prelude::*;

/// One SET (RFC 8417) waiting in the outbox for one receiver, or refused
/// by it. Its `jti` is fixed when the row is written, so every delivery
/// attempt carries the same one (RFC 8935 §2: receivers deduplicate by it).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "security_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub receiver_id: String,
    pub jti: String,
    /// SSF 1.0 §4.1.9 `txn`: the same for every SET of one change.
    pub txn: String,
    /// The event type URI (the key in the `events` claim).
    pub event_type: String,
    /// SSF 1.0 §3 `sub_id`, without the issuer (added when signing).
    pub sub_id: Json,
    /// The event object (the value in the `events` claim).
    pub event: Json,
    /// When the change happened (Unix seconds): the SET's `iat`.
    pub created_at: i64,
    /// `pending` or `failed`.
    pub state: String,
    pub attempts: i32,
    /// Unix milliseconds.
    pub next_attempt_ms: i64,
    /// Unix milliseconds; a row leased to a node is not pushed by another.
    pub leased_until_ms: i64,
    /// The lease holder's random token.
    pub lease: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
