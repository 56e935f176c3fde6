//! Single-use JWT identifiers (client assertion `jti`, later DPoP `jti`).

use entity::used_jti;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use super::StoreResult;

/// Records `key` as used until `expires_at`. Returns `false` when it was
/// already used: a unique-key insert, so exactly one caller wins across
/// every node sharing the database.
pub async fn use_once(db: &impl ConnectionTrait, key: &str, expires_at: i64) -> StoreResult<bool> {
    let row = used_jti::ActiveModel {
        key: Set(key.to_string()),
        expires_at: Set(expires_at),
    };
    let inserted = used_jti::Entity::insert(row)
        .on_conflict(
            OnConflict::column(used_jti::Column::Key)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(inserted == 1)
}

pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    let result = used_jti::Entity::delete_many()
        .filter(used_jti::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}
