//! Delegations: tokens issued by token exchange for an owner's account or
//! agents, listed on the owner's grants page and revocable there.

use entity::delegation;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
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

/// The live delegations (neither expired nor revoked) a user sees, newest
/// first: those of their agents, and those acting for them (their token
/// was the subject), whoever's agent acts. An agent trading its own
/// passport (no actors) is no delegation and is not listed.
pub async fn live_for_owner(
    db: &impl ConnectionTrait,
    owner_id: &str,
    now: i64,
) -> StoreResult<Vec<DelegationRow>> {
    Ok(delegation::Entity::find()
        .filter(
            Condition::any()
                .add(delegation::Column::OwnerId.eq(owner_id))
                .add(delegation::Column::Subject.eq(owner_id)),
        )
        .filter(delegation::Column::Actors.ne(""))
        .filter(delegation::Column::ExpiresAt.gt(now))
        .filter(delegation::Column::RevokedAt.is_null())
        .order_by_desc(delegation::Column::IssuedAt)
        .limit(PAGE)
        .all(db)
        .await?)
}

/// Revokes one delegation the user sees (as the agent's owner or as the
/// subject): the token's `jti` joins the revocation list (every node turns
/// it away within its refresh interval), with what was derived from it, in
/// the same transaction as the mark and the audit row. `false`: not one
/// the user sees, or not live.
pub async fn revoke<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    owner_id: &str,
    jti: &str,
    now: i64,
    audit: super::audit::AuditEvent,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    let Some(row) = delegation::Entity::find_by_id(jti.to_string())
        .filter(
            Condition::any()
                .add(delegation::Column::OwnerId.eq(owner_id))
                .add(delegation::Column::Subject.eq(owner_id)),
        )
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

/// Most generations one revocation follows down (a chain is at most
/// `--max-delegation-depth` deep; this bounds the loop whatever the data).
const MAX_GENERATIONS: usize = 16;

/// Marks revoked the live tokens derived from `jti` by token exchange, and
/// theirs in turn, and returns each one's (`jti`, agent, expiry) for the
/// revocation list. Called by [`super::revocations::revoke`], so every way
/// a token is revoked (RFC 7009, a family, a consent, a user) reaches
/// what was derived from it (SECURITY.md, "Delegations").
pub async fn revoke_derived(
    db: &impl ConnectionTrait,
    jti: &str,
    now: i64,
) -> StoreResult<Vec<(String, String, i64)>> {
    let mut revoked = Vec::new();
    let mut parents = vec![jti.to_string()];
    for _ in 0..MAX_GENERATIONS {
        if parents.is_empty() {
            break;
        }
        let children = delegation::Entity::find()
            .filter(delegation::Column::ParentJti.is_in(parents))
            .filter(delegation::Column::RevokedAt.is_null())
            .filter(delegation::Column::ExpiresAt.gt(now))
            .all(db)
            .await?;
        if children.is_empty() {
            break;
        }
        delegation::Entity::update_many()
            .col_expr(delegation::Column::RevokedAt, Expr::value(now))
            .filter(delegation::Column::Jti.is_in(children.iter().map(|c| c.jti.clone())))
            .exec(db)
            .await?;
        parents = children.iter().map(|c| c.jti.clone()).collect();
        revoked.extend(
            children
                .into_iter()
                .map(|c| (c.jti, c.agent_id, c.expires_at)),
        );
    }
    Ok(revoked)
}

pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    Ok(delegation::Entity::delete_many()
        .filter(delegation::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?
        .rows_affected)
}
