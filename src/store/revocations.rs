//! Revoked JWT access tokens (RFC 7009), kept until they would expire,
//! each with its status list index when it has one (the bits every node
//! serves, `crate::tokens::status`).

use entity::revoked_token;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use super::StoreResult;
use super::status::StatusRef;

/// Puts `jti` on the revocation list, and with it every token derived
/// from it by token exchange ([`super::delegations::revoke_derived`]).
/// Its status list entry is `status` when the caller read it from the
/// token, else the one recorded at issuance, if any.
pub async fn revoke(
    db: &impl ConnectionTrait,
    jti: &str,
    client_id: &str,
    expires_at: i64,
    now: i64,
) -> StoreResult<()> {
    revoke_with_status(db, jti, client_id, expires_at, None, now).await
}

/// [`revoke`], with the token's own status list entry.
pub async fn revoke_with_status(
    db: &impl ConnectionTrait,
    jti: &str,
    client_id: &str,
    expires_at: i64,
    status: Option<StatusRef>,
    now: i64,
) -> StoreResult<()> {
    insert(db, jti, client_id, expires_at, status, now).await?;
    for (derived, agent_id, exp) in super::delegations::revoke_derived(db, jti, now).await? {
        insert(db, &derived, &agent_id, exp, None, now).await?;
    }
    Ok(())
}

async fn insert(
    db: &impl ConnectionTrait,
    jti: &str,
    client_id: &str,
    expires_at: i64,
    status: Option<StatusRef>,
    now: i64,
) -> StoreResult<()> {
    let status = match status {
        Some(s) => Some(s),
        None => super::status::lookup(db, jti).await?,
    };
    let row = revoked_token::ActiveModel {
        jti: Set(jti.to_string()),
        client_id: Set(client_id.to_string()),
        revoked_at: Set(now),
        expires_at: Set(expires_at),
        status_list: Set(status.map(|s| s.list)),
        status_idx: Set(status.map(|s| s.idx)),
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
    status: Option<StatusRef>,
    now: i64,
    event: super::audit::AuditEvent,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    revoke_with_status(&txn, jti, client_id, expires_at, status, now).await?;
    super::audit::insert(&txn, event).await?;
    txn.commit().await?;
    Ok(())
}

/// A revocation as the node-local caches read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub jti: String,
    pub expires_at: i64,
    pub revoked_at: i64,
    pub status: Option<StatusRef>,
}

/// Revocations recorded at or after `since` (for the node-local caches).
pub async fn since(db: &impl ConnectionTrait, since: i64) -> StoreResult<Vec<Revoked>> {
    let rows = revoked_token::Entity::find()
        .filter(revoked_token::Column::RevokedAt.gte(since))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Revoked {
            status: r
                .status_list
                .zip(r.status_idx)
                .map(|(list, idx)| StatusRef { list, idx }),
            jti: r.jti,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        })
        .collect())
}
