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

/// [`use_once`] for high-rate, short-lived identifiers (DPoP proof `jti`s)
/// on PostgreSQL: the same unique-key insert, committed with
/// `synchronous_commit = off` in one round trip, so a proof costs no WAL
/// flush. Uniqueness is enforced exactly as before (asynchronous commit
/// changes durability, not visibility or locking); what a database crash
/// can lose is the last few hundred milliseconds of rows, which only
/// matters for proofs replayed across that crash inside their short
/// `iat` window. Other backends use [`use_once`].
pub async fn use_once_fast(
    db: &impl ConnectionTrait,
    key: &str,
    expires_at: i64,
) -> StoreResult<bool> {
    if !super::is_shared(db) {
        return use_once(db, key, expires_at).await;
    }
    // Simple-query protocol takes no parameters: the key is hashed to hex
    // so that nothing a client sent reaches the SQL text.
    let hashed: String = crate::crypto::sha256(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sql = format!(
        "BEGIN; SET LOCAL synchronous_commit TO OFF; \
         INSERT INTO used_jtis (key, expires_at) VALUES ('h:{hashed}', {expires_at}) ON CONFLICT (key) DO NOTHING; \
         COMMIT;"
    );
    let result = db.execute_unprepared(&sql).await?;
    Ok(result.rows_affected() == 1)
}
