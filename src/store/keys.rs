//! Signing keys at rest.

use entity::signing_key;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};

use super::StoreResult;

pub type KeyRow = signing_key::Model;

pub async fn list(db: &impl ConnectionTrait) -> StoreResult<Vec<KeyRow>> {
    Ok(signing_key::Entity::find()
        .order_by_asc(signing_key::Column::ActivatesAt)
        .all(db)
        .await?)
}

pub async fn insert(db: &impl ConnectionTrait, row: KeyRow) -> StoreResult<()> {
    let active: signing_key::ActiveModel = row.into();
    signing_key::Entity::insert(active)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// In one transaction: every key not yet scheduled for retirement gets
/// `retire_after`, the new key is inserted, and long-retired keys are
/// deleted.
pub async fn insert_rotation<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    row: KeyRow,
    retire_after: i64,
    now: i64,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    signing_key::Entity::update_many()
        .col_expr(signing_key::Column::RetireAfter, Expr::value(retire_after))
        .filter(signing_key::Column::RetireAfter.is_null())
        .exec(&txn)
        .await?;
    signing_key::Entity::delete_many()
        .filter(signing_key::Column::RetireAfter.lt(now))
        .exec(&txn)
        .await?;
    insert(&txn, row).await?;
    txn.commit().await?;
    Ok(())
}

/// In one transaction: keys of other algorithms not yet scheduled for
/// retirement get `others_retire_after`, and the new key (the first
/// active one of its algorithm) is inserted.
pub async fn insert_first_of_alg<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    row: KeyRow,
    others_retire_after: i64,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    signing_key::Entity::update_many()
        .col_expr(
            signing_key::Column::RetireAfter,
            Expr::value(others_retire_after),
        )
        .filter(signing_key::Column::RetireAfter.is_null())
        .filter(signing_key::Column::Alg.ne(row.alg.clone()))
        .exec(&txn)
        .await?;
    insert(&txn, row).await?;
    txn.commit().await?;
    Ok(())
}
