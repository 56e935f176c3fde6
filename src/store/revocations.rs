//! Revoked JWT access tokens (RFC 7009), kept until they would expire.

use entity::revoked_token;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use super::StoreResult;

/// Puts `jti` on the revocation list, and with it every token derived
/// from it by token exchange ([`super::delegations::revoke_derived`]).
pub async fn revoke(
    db: &impl ConnectionTrait,
    jti: &str,
    client_id: &str,
    expires_at: i64,
    now: i64,
) -> StoreResult<()> {
    insert(db, jti, client_id, expires_at, now).await?;
    for (derived, agent_id, exp) in super::delegations::revoke_derived(db, jti, now).await? {
        insert(db, &derived, &agent_id, exp, now).await?;
    }
    Ok(())
}

async fn insert(
    db: &impl ConnectionTrait,
    jti: &str,
    client_id: &str,
    expires_at: i64,
    now: i64,
) -> StoreResult<()> {
    let row = revoked_token::ActiveModel {
        jti: Set(jti.to_string()),
        client_id: Set(client_id.to_string()),
        revoked_at: Set(now),
        expires_at: Set(expires_at),
    };
    revoked_token::Entity::insert(row)
        .on_conflict(
            OnConflict::column(revoked_token::Column::Jti)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn is_revoked(db: &impl ConnectionTrait, jti: &str) -> StoreResult<bool> {
    Ok(revoked_token::Entity::find_by_id(jti.to_string())
        .one(db)
        .await?
        .is_some())
}

pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    let result = revoked_token::Entity::delete_many()
        .filter(revoked_token::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Revokes and audits in one transaction: a 200 from /revoke means both
/// are written.
pub async fn revoke_audited<C: sea_orm::ConnectionTrait + sea_orm::TransactionTrait>(
    db: &C,
    jti: &str,
    client_id: &str,
    expires_at: i64,
    now: i64,
    event: super::audit::AuditEvent,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    revoke(&txn, jti, client_id, expires_at, now).await?;
    super::audit::insert(&txn, event).await?;
    txn.commit().await?;
    Ok(())
}

/// Revocations recorded at or after `since` (for the node-local cache).
pub async fn since(db: &impl ConnectionTrait, since: i64) -> StoreResult<Vec<(String, i64, i64)>> {
    let rows = revoked_token::Entity::find()
        .filter(revoked_token::Column::RevokedAt.gte(since))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.jti, r.expires_at, r.revoked_at))
        .collect())
}
