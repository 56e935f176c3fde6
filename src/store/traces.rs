//! The connection doctor's table: each client's recent authorization
//! steps (`crate::doctor`). Never a secret, code or token.

use entity::client_trace;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, NotSet, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::StoreResult;

/// One step, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRow {
    pub client_id: String,
    pub attempt: Option<String>,
    pub at: i64,
    pub step: &'static str,
    pub refused: bool,
    pub reason: Option<String>,
    pub fix: Option<String>,
}

pub async fn insert_many(db: &impl ConnectionTrait, rows: Vec<TraceRow>) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    client_trace::Entity::insert_many(rows.into_iter().map(|r| client_trace::ActiveModel {
        id: NotSet,
        client_id: Set(r.client_id),
        attempt: Set(r.attempt),
        at: Set(r.at),
        step: Set(r.step.to_string()),
        outcome: Set(if r.refused { "refused" } else { "ok" }.to_string()),
        reason: Set(r.reason),
        fix: Set(r.fix),
    }))
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Keeps the newest `keep` steps of `client_id`.
pub async fn keep_newest(db: &impl ConnectionTrait, client_id: &str, keep: u64) -> StoreResult<()> {
    let cut = client_trace::Entity::find()
        .select_only()
        .column(client_trace::Column::Id)
        .filter(client_trace::Column::ClientId.eq(client_id))
        .order_by_desc(client_trace::Column::Id)
        .offset(keep)
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await?;
    if let Some(cut) = cut {
        client_trace::Entity::delete_many()
            .filter(client_trace::Column::ClientId.eq(client_id))
            .filter(client_trace::Column::Id.lte(cut))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Keeps the newest `keep` steps of all clients together.
pub async fn keep_total(db: &impl ConnectionTrait, keep: u64) -> StoreResult<u64> {
    let cut = client_trace::Entity::find()
        .select_only()
        .column(client_trace::Column::Id)
        .order_by_desc(client_trace::Column::Id)
        .offset(keep)
        .limit(1)
        .into_tuple::<i64>()
        .one(db)
        .await?;
    let Some(cut) = cut else {
        return Ok(0);
    };
    Ok(client_trace::Entity::delete_many()
        .filter(client_trace::Column::Id.lte(cut))
        .exec(db)
        .await?
        .rows_affected)
}

/// Drops every step before `before` (Unix seconds).
pub async fn drop_older(db: &impl ConnectionTrait, before: i64) -> StoreResult<u64> {
    Ok(client_trace::Entity::delete_many()
        .filter(client_trace::Column::At.lt(before))
        .exec(db)
        .await?
        .rows_affected)
}

/// The newest `limit` steps of `client_id`, newest first.
pub async fn recent(
    db: &impl ConnectionTrait,
    client_id: &str,
    limit: u64,
) -> StoreResult<Vec<client_trace::Model>> {
    Ok(client_trace::Entity::find()
        .filter(client_trace::Column::ClientId.eq(client_id))
        .order_by_desc(client_trace::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// The steps of one attempt (an `/authorize` request), oldest first.
pub async fn attempt(
    db: &impl ConnectionTrait,
    attempt: &str,
) -> StoreResult<Vec<client_trace::Model>> {
    Ok(client_trace::Entity::find()
        .filter(client_trace::Column::Attempt.eq(attempt))
        .order_by_asc(client_trace::Column::Id)
        .limit(100)
        .all(db)
        .await?)
}
