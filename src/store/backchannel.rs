//! Backchannel approval requests (OpenID CIBA Core). As with login
//! requests, every state change is one conditional write (`UPDATE …
//! WHERE status = 'pending' …`, `rows_affected == 1`): a request is
//! answered once, its token delivered once and its ping sent once,
//! whatever the number of racers or nodes.

use entity::backchannel_request as br;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Set,
};

use super::StoreResult;

pub use br::Model as BackchannelRow;

pub const PENDING: &str = "pending";
pub const APPROVED: &str = "approved";
pub const DENIED: &str = "denied";

/// How long an answered or expired request stays readable (a late poll
/// still learns `expired_token` or `access_denied`), before the purge.
pub const KEEP_AFTER_EXPIRY: i64 = 3600;

pub struct NewRequest {
    pub id: String,
    pub req_hash: [u8; 32],
    pub client_id: String,
    pub agent_id: Option<String>,
    pub user_id: Option<String>,
    pub scope: String,
    pub resources: String,
    pub authorization_details: Option<String>,
    pub binding_message: Option<String>,
    pub now: i64,
    pub expires_at: i64,
    pub poll_interval: i32,
    pub notify_endpoint: Option<String>,
    pub notify_sealed: Option<Vec<u8>>,
}

pub async fn insert(db: &impl ConnectionTrait, new: NewRequest) -> StoreResult<()> {
    br::ActiveModel {
        id: Set(new.id),
        req_hash: Set(new.req_hash.to_vec()),
        client_id: Set(new.client_id),
        agent_id: Set(new.agent_id),
        user_id: Set(new.user_id),
        scope: Set(new.scope),
        resources: Set(new.resources),
        authorization_details: Set(new.authorization_details),
        binding_message: Set(new.binding_message),
        status: Set(PENDING.into()),
        created_at: Set(new.now),
        expires_at: Set(new.expires_at),
        poll_interval: Set(new.poll_interval),
        last_poll_at: Set(None),
        resolved_at: Set(None),
        delivered_at: Set(None),
        notify_endpoint: Set(new.notify_endpoint),
        notify_sealed: Set(new.notify_sealed),
        notified_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// The request an `auth_req_id` names (by its hash).
pub async fn by_hash(
    db: &impl ConnectionTrait,
    req_hash: [u8; 32],
) -> StoreResult<Option<BackchannelRow>> {
    Ok(br::Entity::find()
        .filter(br::Column::ReqHash.eq(req_hash.to_vec()))
        .one(db)
        .await?)
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> StoreResult<Option<BackchannelRow>> {
    Ok(br::Entity::find_by_id(id.to_string()).one(db).await?)
}

/// The requests waiting for `user`, oldest first.
pub async fn pending_for_user(
    db: &impl ConnectionTrait,
    user: &str,
    now: i64,
) -> StoreResult<Vec<BackchannelRow>> {
    Ok(br::Entity::find()
        .filter(br::Column::UserId.eq(user))
        .filter(br::Column::Status.eq(PENDING))
        .filter(br::Column::ExpiresAt.gt(now))
        .order_by_asc(br::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Pending, unexpired requests of one client (its cap).
pub async fn open_for_client(
    db: &impl ConnectionTrait,
    client: &str,
    now: i64,
) -> StoreResult<u64> {
    Ok(br::Entity::find()
        .filter(br::Column::ClientId.eq(client))
        .filter(br::Column::Status.eq(PENDING))
        .filter(br::Column::ExpiresAt.gt(now))
        .count(db)
        .await?)
}

/// Pending, unexpired requests waiting for one owner (their cap).
pub async fn open_for_user(db: &impl ConnectionTrait, user: &str, now: i64) -> StoreResult<u64> {
    Ok(br::Entity::find()
        .filter(br::Column::UserId.eq(user))
        .filter(br::Column::Status.eq(PENDING))
        .filter(br::Column::ExpiresAt.gt(now))
        .count(db)
        .await?)
}

/// The owner's answer: true for the one caller that resolved the pending,
/// unexpired request of `user`.
pub async fn resolve(
    db: &impl ConnectionTrait,
    id: &str,
    user: &str,
    status: &'static str,
    now: i64,
) -> StoreResult<bool> {
    let r = br::Entity::update_many()
        .col_expr(br::Column::Status, Expr::value(status))
        .col_expr(br::Column::ResolvedAt, Expr::value(now))
        .filter(br::Column::Id.eq(id))
        .filter(br::Column::UserId.eq(user))
        .filter(br::Column::Status.eq(PENDING))
        .filter(br::Column::ExpiresAt.gt(now))
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Claims the delivery of an approved request's token. True once.
pub async fn claim_delivery(db: &impl ConnectionTrait, id: &str, now: i64) -> StoreResult<bool> {
    let r = br::Entity::update_many()
        .col_expr(br::Column::DeliveredAt, Expr::value(now))
        .filter(br::Column::Id.eq(id))
        .filter(br::Column::Status.eq(APPROVED))
        .filter(br::Column::DeliveredAt.is_null())
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Records a poll; false when the last one was less than the request's
/// interval ago (CIBA Core §11 `slow_down`), which also lengthens the
/// interval by 5 seconds (as RFC 8628 §3.5 asks of the client).
pub async fn record_poll(
    db: &impl ConnectionTrait,
    row: &BackchannelRow,
    now: i64,
) -> StoreResult<bool> {
    let r = br::Entity::update_many()
        .col_expr(br::Column::LastPollAt, Expr::value(now))
        .filter(br::Column::Id.eq(row.id.as_str()))
        .filter(
            br::Column::LastPollAt
                .is_null()
                .or(br::Column::LastPollAt.lte(now - i64::from(row.poll_interval))),
        )
        .exec(db)
        .await?;
    if r.rows_affected == 1 {
        return Ok(true);
    }
    br::Entity::update_many()
        .col_expr(
            br::Column::PollInterval,
            Expr::col(br::Column::PollInterval).add(5),
        )
        .col_expr(br::Column::LastPollAt, Expr::value(now))
        .filter(br::Column::Id.eq(row.id.as_str()))
        .filter(br::Column::PollInterval.lt(60))
        .exec(db)
        .await?;
    Ok(false)
}

/// Ping mode: takes the one notification of an answered request to send.
/// True once.
pub async fn take_ping(db: &impl ConnectionTrait, id: &str, now: i64) -> StoreResult<bool> {
    let r = br::Entity::update_many()
        .col_expr(br::Column::NotifiedAt, Expr::value(now))
        .filter(br::Column::Id.eq(id))
        .filter(br::Column::Status.ne(PENDING))
        .filter(br::Column::NotifyEndpoint.is_not_null())
        .filter(br::Column::NotifiedAt.is_null())
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Deletes requests expired more than [`KEEP_AFTER_EXPIRY`] ago.
pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    Ok(br::Entity::delete_many()
        .filter(br::Column::ExpiresAt.lt(now - KEEP_AFTER_EXPIRY))
        .exec(db)
        .await?
        .rows_affected)
}
