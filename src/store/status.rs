//! Token Status Lists (draft-ietf-oauth-status-list): lists and the
//! blocks of indices nodes reserve from them, where each revocable token's
//! status is, and which agents it names.

use entity::{revoked_token, status_agent, status_list, status_token};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::StoreResult;

/// Where a token's status is: index `idx` of list `list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusRef {
    pub list: i64,
    pub idx: i64,
}

/// A block of indices reserved by one node: `[start, start + len)` of
/// `list`, which holds `size` indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub list: i64,
    pub size: i64,
    pub start: i64,
    pub len: i64,
}

/// Reserves the next `len` indices of the newest list with room, or of a
/// new list of `size` indices: one conditional update (or one insert), so
/// that no two callers, on any node, get the same index. Each list's
/// `retire_after` becomes `retire_after` (the caller's bound on when the
/// last token indexed from this block expires) when that is later.
pub async fn reserve(
    db: &impl ConnectionTrait,
    size: i64,
    len: i64,
    now: i64,
    retire_after: i64,
) -> StoreResult<Block> {
    loop {
        let newest = status_list::Entity::find()
            .order_by_desc(status_list::Column::Id)
            .one(db)
            .await?;
        match newest {
            Some(list) if list.next_idx + len <= list.size => {
                let updated = status_list::Entity::update_many()
                    .col_expr(
                        status_list::Column::NextIdx,
                        Expr::col(status_list::Column::NextIdx).add(len),
                    )
                    .filter(status_list::Column::Id.eq(list.id))
                    .filter(status_list::Column::NextIdx.eq(list.next_idx))
                    .exec(db)
                    .await?;
                if updated.rows_affected != 1 {
                    // Another reservation won this round: read again.
                    continue;
                }
                status_list::Entity::update_many()
                    .col_expr(status_list::Column::RetireAfter, Expr::value(retire_after))
                    .filter(status_list::Column::Id.eq(list.id))
                    .filter(status_list::Column::RetireAfter.lt(retire_after))
                    .exec(db)
                    .await?;
                return Ok(Block {
                    list: list.id,
                    size: list.size,
                    start: list.next_idx,
                    len,
                });
            }
            _ => {
                let created = status_list::Entity::insert(status_list::ActiveModel {
                    id: NotSet,
                    size: Set(size),
                    next_idx: Set(len.min(size)),
                    created_at: Set(now),
                    retire_after: Set(retire_after),
                })
                .exec(db)
                .await?;
                return Ok(Block {
                    list: created.last_insert_id,
                    size,
                    start: 0,
                    len: len.min(size),
                });
            }
        }
    }
}

/// The lists not yet retired.
pub async fn live_lists(
    db: &impl ConnectionTrait,
    now: i64,
) -> StoreResult<Vec<status_list::Model>> {
    Ok(status_list::Entity::find()
        .filter(status_list::Column::RetireAfter.gte(now))
        .order_by_asc(status_list::Column::Id)
        .all(db)
        .await?)
}

/// A token whose status something else than the token can change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub jti: String,
    pub status: StatusRef,
    pub iat: i64,
    pub exp: i64,
    /// The agents it names.
    pub agents: Vec<String>,
}

/// Records `entries` (idempotent: a retried batch inserts nothing twice).
pub async fn record(db: &impl ConnectionTrait, entries: &[Entry]) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    status_token::Entity::insert_many(entries.iter().map(|e| status_token::ActiveModel {
        jti: Set(e.jti.clone()),
        list_id: Set(e.status.list),
        idx: Set(e.status.idx),
        iat: Set(e.iat),
        expires_at: Set(e.exp),
    }))
    .on_conflict(
        OnConflict::column(status_token::Column::Jti)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    let agents: Vec<_> = entries
        .iter()
        .flat_map(|e| {
            e.agents.iter().map(move |a| status_agent::ActiveModel {
                agent_id: Set(a.clone()),
                jti: Set(e.jti.clone()),
                list_id: Set(e.status.list),
                idx: Set(e.status.idx),
                iat: Set(e.iat),
                expires_at: Set(e.exp),
            })
        })
        .collect();
    if !agents.is_empty() {
        status_agent::Entity::insert_many(agents)
            .on_conflict(
                OnConflict::columns([status_agent::Column::AgentId, status_agent::Column::Jti])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Where token `jti`'s status is, when it was recorded.
pub async fn lookup(db: &impl ConnectionTrait, jti: &str) -> StoreResult<Option<StatusRef>> {
    Ok(status_token::Entity::find_by_id(jti.to_string())
        .one(db)
        .await?
        .map(|t| StatusRef {
            list: t.list_id,
            idx: t.idx,
        }))
}

/// The kill switch, at the lists: revokes every unexpired token naming
/// `agent_id` issued before `valid_after` (the agent's cut-off), each
/// with its index. Idempotent; returns how many were newly revoked.
pub async fn revoke_agent_tokens(
    db: &impl ConnectionTrait,
    agent_id: &str,
    valid_after: i64,
    now: i64,
) -> StoreResult<u64> {
    let rows = status_agent::Entity::find()
        .filter(status_agent::Column::AgentId.eq(agent_id))
        .filter(status_agent::Column::Iat.lt(valid_after))
        .filter(status_agent::Column::ExpiresAt.gt(now))
        .all(db)
        .await?;
    revoke_rows(
        db,
        rows.into_iter()
            .map(|r| {
                (
                    r.jti,
                    r.agent_id,
                    r.expires_at,
                    StatusRef {
                        list: r.list_id,
                        idx: r.idx,
                    },
                )
            })
            .collect(),
        now,
    )
    .await
}

/// Every unexpired token naming an agent of `owner_id`'s, revoked (the
/// owner is being deleted).
pub async fn revoke_owned_agent_tokens(
    db: &impl ConnectionTrait,
    agent_ids: &[String],
    now: i64,
) -> StoreResult<u64> {
    let mut total = 0;
    for id in agent_ids {
        total += revoke_agent_tokens(db, id, i64::MAX, now).await?;
    }
    Ok(total)
}

/// Revocation rows for (`jti`, client, expiry, status), 500 per statement.
pub async fn revoke_rows(
    db: &impl ConnectionTrait,
    rows: Vec<(String, String, i64, StatusRef)>,
    now: i64,
) -> StoreResult<u64> {
    let mut total = 0;
    for chunk in rows.chunks(500) {
        let r = revoked_token::Entity::insert_many(chunk.iter().map(|(jti, client, exp, s)| {
            revoked_token::ActiveModel {
                jti: Set(jti.clone()),
                client_id: Set(client.clone()),
                revoked_at: Set(now),
                expires_at: Set(*exp),
                status_list: Set(Some(s.list)),
                status_idx: Set(Some(s.idx)),
            }
        }))
        .on_conflict(
            OnConflict::column(revoked_token::Column::Jti)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
        total += r;
    }
    Ok(total)
}

/// Agents' status and cut-off, read from the database (not a cache):
/// (id, active, valid_after) of each of `ids` that exists.
pub async fn agents_now(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> StoreResult<Vec<(String, bool, i64)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String, i64)> = entity::agent::Entity::find()
        .select_only()
        .column(entity::agent::Column::Id)
        .column(entity::agent::Column::Status)
        .column(entity::agent::Column::TokensValidAfter)
        .filter(entity::agent::Column::Id.is_in(ids.iter().cloned()))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, status, after)| (id, status == "active", after))
        .collect())
}

/// Retires lists past `retire_after`, and forgets where expired tokens'
/// statuses were.
pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    let lists = status_list::Entity::delete_many()
        .filter(status_list::Column::RetireAfter.lt(now))
        .exec(db)
        .await?;
    let tokens = status_token::Entity::delete_many()
        .filter(status_token::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    let agents = status_agent::Entity::delete_many()
        .filter(status_agent::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    Ok(lists.rows_affected + tokens.rows_affected + agents.rows_affected)
}
