use sea_orm::entity::prelude::*;

/// A backchannel approval request (OpenID CIBA Core): a client asking an
/// owner to approve an action.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backchannel_requests")]
pub struct Model {
    /// 128-bit random, base64url: how the console names the request.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// SHA-256 of the `auth_req_id` the client redeems.
    pub req_hash: Vec<u8>,
    pub client_id: String,
    /// The agent asking, when the client is an agent's.
    pub agent_id: Option<String>,
    /// The owner asked. `None`: the hint named nobody the client may ask;
    /// the request only expires (no account probing).
    pub user_id: Option<String>,
    pub scope: String,
    /// JSON array of the token's resources, as registered.
    pub resources: String,
    /// RFC 9396 `authorization_details`, checked (a JSON array).
    pub authorization_details: Option<String>,
    /// CIBA Core §7.1 `binding_message`, shown to the owner.
    pub binding_message: Option<String>,
    /// `pending`, `approved` or `denied` (expiry is read from `expires_at`).
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub poll_interval: i32,
    pub last_poll_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// When the token went to the client (once).
    pub delivered_at: Option<i64>,
    /// Ping mode: the client's notification endpoint, and the
    /// `auth_req_id` with its `client_notification_token`, sealed.
    pub notify_endpoint: Option<String>,
    pub notify_sealed: Option<Vec<u8>>,
    /// When a node took the ping to send (once).
    pub notified_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
