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
    let dpop = sea_orm::sea_query::Query::delete()
        .from_table(sea_orm::sea_query::Alias::new("dpop_jtis"))
        .and_where(
            sea_orm::sea_query::Expr::col(sea_orm::sea_query::Alias::new("expires_at")).lt(now),
        )
        .to_owned();
    let dpop = db.execute(db.get_database_backend().build(&dpop)).await?;
    Ok(result.rows_affected + dpop.rows_affected())
}

/// Many [`use_once`]s at once on PostgreSQL, for the DPoP replay batcher:
/// one `INSERT … SELECT FROM unnest($1, $2) ON CONFLICT DO NOTHING
/// RETURNING` committed with `synchronous_commit = off`. The statement text
/// is the same whatever the batch size, so PostgreSQL parses and plans it
/// once per connection (a `VALUES` list of N rows is a new statement for
/// every N). Uniqueness is enforced exactly as before (asynchronous commit
/// changes durability, not visibility or locking); what a database crash
/// can lose is the last few hundred milliseconds of rows, which matters
/// only for a proof replayed across that crash inside its short `iat`
/// window. Keys are stored hashed. Returns, per input, whether it was the
/// first use; within one batch only the first occurrence of a key can win.
pub async fn use_many_fast<C: ConnectionTrait>(
    db: &C,
    items: &[(String, i64)],
) -> StoreResult<Vec<bool>> {
    use std::collections::HashSet;
    if items.is_empty() {
        return Ok(Vec::new());
    }
    // 128 bits of SHA-256, base64url (22 characters): collisions are out
    // of reach, and the index stays small.
    let hashed: Vec<String> = items
        .iter()
        .map(|(k, _)| crate::crypto::b64url(&crate::crypto::sha256(k.as_bytes())[..16]))
        .collect();
    let expires: Vec<i64> = items.iter().map(|(_, e)| *e).collect();
    // One statement, one round trip: autocommit, with asynchronous commit
    // switched on for this statement's own transaction only (`set_config`
    // with is_local; the setting is read when the transaction commits).
    let sql = "INSERT INTO dpop_jtis (key, expires_at) \
               SELECT v.k, v.e FROM unnest($1::text[], $2::bigint[]) AS v(k, e) \
               WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL \
               ON CONFLICT (key) DO NOTHING RETURNING key";
    let rows = db
        .query_all(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            sql,
            [
                sea_orm::Value::from(hashed.clone()),
                sea_orm::Value::from(expires),
            ],
        ))
        .await?;
    let mut inserted: HashSet<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<String>("", "key").ok())
        .collect();
    Ok(hashed.iter().map(|k| inserted.remove(k)).collect())
}
