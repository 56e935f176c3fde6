//! Delegations: tokens issued by token exchange for an owner's account or
//! agents, listed on the owner's grants page and revocable there.

use entity::delegation;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use super::StoreResult;

pub type DelegationRow = delegation::Model;

/// How many live delegations the grants page shows at most.
pub const PAGE: u64 = 100;

pub async fn insert(db: &impl ConnectionTrait, row: DelegationRow) -> StoreResult<()> {
    delegation::Entity::insert(delegation::ActiveModel::from(row))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The owner's delegations that are live (neither expired nor revoked),
/// newest first.
pub async fn live_for_owner(
    db: &impl ConnectionTrait,
    owner_id: &str,
    now: i64,
) -> StoreResult<Vec<DelegationRow>> {
    Ok(delegation::Entity::find()
        .filter(delegation::Column::OwnerId.eq(owner_id))
        .filter(delegation::Column::ExpiresAt.gt(now))
        .filter(delegation::Column::RevokedAt.is_null())
        .order_by_desc(delegation::Column::IssuedAt)
        .limit(PAGE)
        .all(db)
        .await?)
}

/// Revokes one of the owner's delegations: the token's `jti` joins the
/// revocation list (every node turns it away within its refresh
/// interval) in the same transaction as the mark and the audit row.
/// `false`: not the owner's, or not live.
pub async fn revoke<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    owner_id: &str,
    jti: &str,
    now: i64,
    audit: super::audit::AuditEvent,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    let Some(row) = delegation::Entity::find_by_id(jti.to_string())
        .filter(delegation::Column::OwnerId.eq(owner_id))
        .filter(delegation::Column::RevokedAt.is_null())
        .one(&txn)
        .await?
    else {
        return Ok(false);
    };
    delegation::Entity::update_many()
        .col_expr(delegation::Column::RevokedAt, Expr::value(now))
        .filter(delegation::Column::Jti.eq(jti))
        .exec(&txn)
        .await?;
    super::revocations::revoke(&txn, jti, &row.agent_id, row.expires_at, now).await?;
    super::audit::insert(&txn, audit).await?;
    txn.commit().await?;
    Ok(true)
}

pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    Ok(delegation::Entity::delete_many()
        .filter(delegation::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?
        .rows_affected)
}
