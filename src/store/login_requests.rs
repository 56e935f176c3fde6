//! Login requests (issue 15). Every state change is one conditional
//! write (`UPDATE … WHERE status = 'pending' …`, `rows_affected == 1`), so
//! that a request resolves exactly once and its passport is delivered
//! exactly once, whatever the number of racers or nodes.

use entity::login_request as lr;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
};

use super::StoreResult;

pub use lr::Model as LoginRequestRow;

pub const PENDING: &str = "pending";
pub const APPROVED: &str = "approved";
pub const DENIED: &str = "denied";

/// How long a resolved or expired request stays readable (a late SSE
/// reconnect or poll still learns the outcome), before the upkeep purge.
pub const KEEP_AFTER_EXPIRY: i64 = 3600;

pub struct NewLoginRequest {
    pub id: String,
    pub site_client_id: String,
    pub agent_id: Option<String>,
    pub scope: String,
    pub now: i64,
    pub expires_at: i64,
    pub poll_interval: i32,
}

pub async fn insert(db: &impl ConnectionTrait, new: NewLoginRequest) -> StoreResult<()> {
    lr::ActiveModel {
        id: Set(new.id),
        site_client_id: Set(new.site_client_id),
        agent_id: Set(new.agent_id),
        scope: Set(new.scope),
        status: Set(PENDING.into()),
        challenge: Set(None),
        challenge_agent: Set(None),
        difficulty: Set(None),
        created_at: Set(new.now),
        expires_at: Set(new.expires_at),
        poll_interval: Set(new.poll_interval),
        last_poll_at: Set(None),
        resolved_at: Set(None),
        resolved_agent: Set(None),
        agent_jkt: Set(None),
        delivered_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(())
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> StoreResult<Option<LoginRequestRow>> {
    Ok(lr::Entity::find_by_id(id.to_string()).one(db).await?)
}

/// Pending, unexpired requests of one site (the cap on open requests).
pub async fn open_for_site(db: &impl ConnectionTrait, site: &str, now: i64) -> StoreResult<u64> {
    Ok(lr::Entity::find()
        .filter(lr::Column::SiteClientId.eq(site))
        .filter(lr::Column::Status.eq(PENDING))
        .filter(lr::Column::ExpiresAt.gt(now))
        .count(db)
        .await?)
}

/// Issues a new challenge to `agent` (replacing any earlier one: only the
/// latest can be answered). False when the request is no longer pending,
/// has expired, or names another agent.
pub async fn set_challenge(
    db: &impl ConnectionTrait,
    id: &str,
    agent: &str,
    challenge: &str,
    difficulty: u32,
    now: i64,
) -> StoreResult<bool> {
    let r = lr::Entity::update_many()
        .col_expr(lr::Column::Challenge, Expr::value(challenge))
        .col_expr(lr::Column::ChallengeAgent, Expr::value(agent))
        .col_expr(lr::Column::Difficulty, Expr::value(difficulty as i32))
        .filter(lr::Column::Id.eq(id))
        .filter(lr::Column::Status.eq(PENDING))
        .filter(lr::Column::ExpiresAt.gt(now))
        .filter(
            lr::Column::AgentId
                .is_null()
                .or(lr::Column::AgentId.eq(agent)),
        )
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Resolves a pending request as `status`, spending `challenge` (which
/// must be the one issued to `agent`). True for the one caller that won.
pub async fn resolve(
    db: &impl ConnectionTrait,
    id: &str,
    agent: &str,
    challenge: &str,
    status: &'static str,
    jkt: Option<&str>,
    now: i64,
) -> StoreResult<bool> {
    let r = lr::Entity::update_many()
        .col_expr(lr::Column::Status, Expr::value(status))
        .col_expr(lr::Column::ResolvedAt, Expr::value(now))
        .col_expr(lr::Column::ResolvedAgent, Expr::value(agent))
        .col_expr(lr::Column::AgentJkt, Expr::value(jkt.map(str::to_string)))
        .col_expr(lr::Column::Challenge, Expr::value(Option::<String>::None))
        .filter(lr::Column::Id.eq(id))
        .filter(lr::Column::Status.eq(PENDING))
        .filter(lr::Column::ExpiresAt.gt(now))
        .filter(lr::Column::Challenge.eq(challenge))
        .filter(lr::Column::ChallengeAgent.eq(agent))
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Claims the delivery of an approved request's passport. True once.
pub async fn claim_delivery(db: &impl ConnectionTrait, id: &str, now: i64) -> StoreResult<bool> {
    let r = lr::Entity::update_many()
        .col_expr(lr::Column::DeliveredAt, Expr::value(now))
        .filter(lr::Column::Id.eq(id))
        .filter(lr::Column::Status.eq(APPROVED))
        .filter(lr::Column::DeliveredAt.is_null())
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Records a poll; false when the last one was less than the request's
/// interval ago (RFC 8628 §3.5 `slow_down`).
pub async fn record_poll(
    db: &impl ConnectionTrait,
    row: &LoginRequestRow,
    now: i64,
) -> StoreResult<bool> {
    let r = lr::Entity::update_many()
        .col_expr(lr::Column::LastPollAt, Expr::value(now))
        .filter(lr::Column::Id.eq(row.id.as_str()))
        .filter(
            lr::Column::LastPollAt
                .is_null()
                .or(lr::Column::LastPollAt.lte(now - i64::from(row.poll_interval))),
        )
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Deletes requests expired more than [`KEEP_AFTER_EXPIRY`] ago.
pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    Ok(lr::Entity::delete_many()
        .filter(lr::Column::ExpiresAt.lt(now - KEEP_AFTER_EXPIRY))
        .exec(db)
        .await?
        .rows_affected)
}
