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

/// Many [`use_once`]s at once on PostgreSQL, for the DPoP replay batcher:
/// one `INSERT … ON CONFLICT DO NOTHING RETURNING` committed with
/// `synchronous_commit = off`. Uniqueness is enforced exactly as before
/// (asynchronous commit changes durability, not visibility or locking);
/// what a database crash can lose is the last few hundred milliseconds of
/// rows, which matters only for a proof replayed across that crash inside
/// its short `iat` window. Keys are stored hashed. Returns, per input,
/// whether it was the first use; within one batch only the first
/// occurrence of a key can win.
pub async fn use_many_fast<C: ConnectionTrait>(
    db: &C,
    items: &[(String, i64)],
) -> StoreResult<Vec<bool>> {
    use std::collections::HashSet;
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let hashed: Vec<String> = items
        .iter()
        .map(|(k, _)| {
            format!(
                "h:{}",
                crate::crypto::sha256(k.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        })
        .collect();
    // One statement, one round trip: autocommit, with asynchronous commit
    // switched on for this statement's own transaction only (`set_config`
    // with is_local; the setting is read when the transaction commits).
    let mut sql =
        String::from("INSERT INTO used_jtis (key, expires_at) SELECT v.k, v.e FROM (VALUES ");
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(items.len() * 2);
    for (i, (key, (_, exp))) in hashed.iter().zip(items).enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(${}, ${}::bigint)", 2 * i + 1, 2 * i + 2));
        values.push(key.clone().into());
        values.push((*exp).into());
    }
    sql.push_str(
        ") AS v(k, e) WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL \
         ON CONFLICT (key) DO NOTHING RETURNING key",
    );
    let rows = db
        .query_all(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    let mut inserted: HashSet<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<String>("", "key").ok())
        .collect();
    Ok(hashed.iter().map(|k| inserted.remove(k)).collect())
}
