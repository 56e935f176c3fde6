//! Bridge-certificate CA epochs and issued certificates (issue 16).

use entity::{bridge_cert, ca_epoch};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};

use super::StoreResult;

pub type EpochRow = ca_epoch::Model;
pub type CertRow = bridge_cert::Model;

/// Every epoch, oldest first.
pub async fn epochs(db: &impl ConnectionTrait) -> StoreResult<Vec<EpochRow>> {
    Ok(ca_epoch::Entity::find()
        .order_by_asc(ca_epoch::Column::Epoch)
        .all(db)
        .await?)
}

/// Starts epoch `row.epoch`. The epoch number is the primary key, so two
/// nodes starting the same epoch at once cannot both win: `Ok(false)` for
/// the loser (it reloads and uses the winner's CA). With `drop_older`,
/// every earlier epoch leaves the trust bundle in the same transaction,
/// and so does the audit row (`ca.rotated`).
pub async fn start_epoch<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    row: EpochRow,
    drop_older: bool,
    now: i64,
    audit: super::audit::AuditEvent,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    let epoch = row.epoch;
    let inserted = ca_epoch::Entity::insert(ca_epoch::ActiveModel::from(row))
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(ca_epoch::Column::Epoch)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    if inserted != 1 {
        return Ok(false);
    }
    if drop_older {
        ca_epoch::Entity::update_many()
            .col_expr(ca_epoch::Column::DroppedAt, Expr::value(now))
            .filter(ca_epoch::Column::Epoch.lt(epoch))
            .filter(ca_epoch::Column::DroppedAt.is_null())
            .exec(&txn)
            .await?;
    }
    super::audit::insert(&txn, audit).await?;
    // CAs whose certificates have expired serve no purpose.
    ca_epoch::Entity::delete_many()
        .filter(ca_epoch::Column::NotAfter.lt(now))
        .filter(ca_epoch::Column::Epoch.lt(epoch))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(true)
}

pub async fn insert_cert(db: &impl ConnectionTrait, row: CertRow) -> StoreResult<()> {
    bridge_cert::Entity::insert(bridge_cert::ActiveModel::from(row))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The newest live certificate of `agent_id` for the key `jkt`.
pub async fn live_cert(
    db: &impl ConnectionTrait,
    agent_id: &str,
    jkt: &str,
    now: i64,
) -> StoreResult<Option<CertRow>> {
    Ok(bridge_cert::Entity::find()
        .filter(bridge_cert::Column::AgentId.eq(agent_id))
        .filter(bridge_cert::Column::Jkt.eq(jkt))
        .filter(bridge_cert::Column::NotAfter.gt(now))
        .order_by_desc(bridge_cert::Column::NotAfter)
        .one(db)
        .await?)
}

pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    Ok(bridge_cert::Entity::delete_many()
        .filter(bridge_cert::Column::NotAfter.lt(now))
        .exec(db)
        .await?
        .rows_affected)
}
