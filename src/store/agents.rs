//! Agents and, in the same transactions, their client rows.

use entity::{agent, client};
use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use super::StoreResult;
use super::audit::{self, AuditEvent};
use super::clients::{self, ClientRecord};

/// Agent ids are `agent-` and a random id, so that a token's subject
/// tells an agent from a user without a lookup.
pub const ID_PREFIX: &str = "agent-";

pub fn is_agent_id(id: &str) -> bool {
    id.starts_with(ID_PREFIX)
}

/// `{issuer}/agents/`: agents as audiences (a user delegates to an agent
/// by authorizing a token for `{issuer}/agents/{id}`).
pub fn audience_prefix(issuer: &str) -> String {
    format!("{issuer}/agents/")
}

/// An agent as the rest of the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub active: bool,
    /// Space-separated scopes it may ask for.
    pub scope: String,
    /// Resources it may get tokens for (empty: any registered one).
    pub resources: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub disabled_at: Option<i64>,
    /// The kill switch's cut-off: a token, passport or bridge certificate
    /// of this agent issued before this second is dead, whatever the
    /// agent's status now (SECURITY.md, "Kill, then re-enable").
    pub valid_after: i64,
}

impl AgentRow {
    /// Whether something this agent got at `iat` may still be honoured:
    /// the agent is active and `iat` is not before its cut-off.
    pub fn honours(&self, iat: i64) -> bool {
        self.active && iat >= self.valid_after
    }
}

/// How long, in seconds, a node that has not yet heard of a kill may go
/// on issuing for the agent: the agent status cache's bound
/// (`agents::STATUS_TTL`, checked there at compile time).
pub const PROPAGATION_SECS: i64 = 1;

/// The cut-off set at `now`: everything issued up to and including this
/// second dies (a token issued earlier in the same second as the kill has
/// the same `iat` as one issued after it), and so does whatever a node
/// with a stale view of the agent issues before its view expires (found
/// by the black-box check: tokens with `iat` one second after a CLI
/// disable came back on re-enabling).
pub fn cut_off(now: i64) -> i64 {
    now.saturating_add(1 + PROPAGATION_SECS)
}

impl TryFrom<agent::Model> for AgentRow {
    type Error = DbErr;

    fn try_from(m: agent::Model) -> Result<Self, DbErr> {
        let resources = serde_json::from_value(m.resources)
            .map_err(|e| DbErr::Custom(format!("agent {} has unreadable resources: {e}", m.id)))?;
        Ok(Self {
            active: m.status == "active",
            id: m.id,
            name: m.name,
            owner_id: m.owner_id,
            scope: m.scope,
            resources,
            created_at: m.created_at,
            updated_at: m.updated_at,
            disabled_at: m.disabled_at,
            valid_after: m.tokens_valid_after,
        })
    }
}

/// Inserts an agent, its client row and the audit row in one transaction.
pub async fn insert<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    agent: &AgentRow,
    client: &ClientRecord,
    event: AuditEvent,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    clients::insert(&txn, client).await?;
    agent::Entity::insert(agent::ActiveModel {
        id: Set(agent.id.clone()),
        name: Set(agent.name.clone()),
        owner_id: Set(agent.owner_id.clone()),
        status: Set(if agent.active { "active" } else { "disabled" }.into()),
        scope: Set(agent.scope.clone()),
        resources: Set(serde_json::Value::from(agent.resources.clone())),
        created_at: Set(agent.created_at),
        updated_at: Set(agent.updated_at),
        disabled_at: Set(agent.disabled_at),
        tokens_valid_after: Set(agent.valid_after),
    })
    .exec_without_returning(&txn)
    .await?;
    audit::insert(&txn, event).await?;
    txn.commit().await?;
    Ok(())
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> StoreResult<Option<AgentRow>> {
    let row = agent::Entity::find_by_id(id.to_string()).one(db).await?;
    Ok(row.map(AgentRow::try_from).transpose()?)
}

/// Agents, oldest first; only `owner_id`'s when given.
pub async fn list(db: &impl ConnectionTrait, owner_id: Option<&str>) -> StoreResult<Vec<AgentRow>> {
    let mut query = agent::Entity::find().order_by_asc(agent::Column::CreatedAt);
    if let Some(owner) = owner_id {
        query = query.filter(agent::Column::OwnerId.eq(owner));
    }
    Ok(query
        .all(db)
        .await?
        .into_iter()
        .map(AgentRow::try_from)
        .collect::<Result<_, _>>()?)
}

/// One page of an owner's agents, oldest first, and whether more follow.
pub async fn page(
    db: &impl ConnectionTrait,
    owner_id: &str,
    page: u64,
    per_page: u64,
) -> StoreResult<(Vec<AgentRow>, bool)> {
    use sea_orm::QuerySelect;
    let mut rows = agent::Entity::find()
        .filter(agent::Column::OwnerId.eq(owner_id))
        .order_by_asc(agent::Column::CreatedAt)
        .order_by_asc(agent::Column::Id)
        .offset(page.saturating_mul(per_page))
        .limit(per_page + 1)
        .all(db)
        .await?;
    let more = rows.len() as u64 > per_page;
    rows.truncate(usize::try_from(per_page).unwrap_or(usize::MAX));
    Ok((
        rows.into_iter()
            .map(AgentRow::try_from)
            .collect::<Result<_, _>>()?,
        more,
    ))
}

/// The kill switch and its undo: flips the status (and `disabled_at`)
/// with its audit row. `false` when the agent does not exist.
pub async fn set_active<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    id: &str,
    active: bool,
    now: i64,
    event: AuditEvent,
) -> StoreResult<bool> {
    use sea_orm::sea_query::Expr;
    let txn = db.begin().await?;
    // One UPDATE, the transaction's first statement: on SQLite a
    // transaction that reads first and writes later fails at once with
    // "database is locked" when another connection wrote in between (the
    // event worker does, often); one that writes first waits its turn.
    let mut update = agent::Entity::update_many()
        .col_expr(
            agent::Column::Status,
            Expr::value(if active { "active" } else { "disabled" }),
        )
        .col_expr(
            agent::Column::DisabledAt,
            Expr::value((!active).then_some(now)),
        )
        .col_expr(agent::Column::UpdatedAt, Expr::value(now));
    if !active {
        // Enabling never lowers it: what the kill ended stays ended.
        update = update.col_expr(agent::Column::TokensValidAfter, Expr::value(cut_off(now)));
    }
    if update
        .filter(agent::Column::Id.eq(id))
        .exec(&txn)
        .await?
        .rows_affected
        == 0
    {
        return Ok(false);
    }
    if !active {
        super::status::revoke_agent_tokens(&txn, id, cut_off(now), now).await?;
    }
    audit::insert(&txn, event).await?;
    txn.commit().await?;
    if !active {
        revoked_after_commit(db, id, cut_off(now), now).await?;
    }
    Ok(true)
}

/// A kill's second pass at the status lists, after its commit: a token
/// recorded while the kill's transaction ran is seen now (its recorder,
/// reading the agent after its own commit, may have read it before the
/// kill committed). See `crate::tokens::status`.
async fn revoked_after_commit(
    db: &impl ConnectionTrait,
    id: &str,
    valid_after: i64,
    now: i64,
) -> StoreResult<()> {
    super::status::revoke_agent_tokens(db, id, valid_after, now).await?;
    Ok(())
}

/// Replaces an agent's keys (its client row's metadata) with the audit
/// row; when `removed_key`, also moves the cut-off ([`cut_off`]), so that
/// no token, passport or certificate issued while the removed key was
/// held survives it. `false` when the agent does not exist.
pub async fn set_keys<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    id: &str,
    metadata: &crate::oauth::client_metadata::ClientMetadata,
    removed_key: bool,
    now: i64,
    event: AuditEvent,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    if !clients::update_metadata(&txn, id, metadata, now).await? {
        return Ok(false);
    }
    if removed_key {
        agent::Entity::update_many()
            .col_expr(
                agent::Column::TokensValidAfter,
                sea_orm::sea_query::Expr::value(cut_off(now)),
            )
            .col_expr(
                agent::Column::UpdatedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(agent::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        super::status::revoke_agent_tokens(&txn, id, cut_off(now), now).await?;
    }
    audit::insert(&txn, event).await?;
    txn.commit().await?;
    if removed_key {
        revoked_after_commit(db, id, cut_off(now), now).await?;
    }
    Ok(true)
}

/// Deletes an agent and its client row, with the audit row.
pub async fn delete<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    id: &str,
    event: AuditEvent,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    let gone = agent::Entity::delete_by_id(id.to_string())
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !gone {
        return Ok(false);
    }
    client::Entity::delete_by_id(id.to_string())
        .exec(&txn)
        .await?;
    // Everything it was named in, whenever issued.
    let now = event.at;
    super::status::revoke_agent_tokens(&txn, id, i64::MAX, now).await?;
    audit::insert(&txn, event).await?;
    txn.commit().await?;
    revoked_after_commit(db, id, i64::MAX, now).await?;
    Ok(true)
}

/// Deletes every agent of `owner_id` and their client rows, and revokes
/// by index every token naming one (inside the caller's transaction: a
/// user's deletion, which calls [`revoke_after_deletion`] once committed).
/// Returns the agents' ids.
pub async fn delete_owned(
    db: &impl ConnectionTrait,
    owner_id: &str,
    now: i64,
) -> StoreResult<Vec<String>> {
    let ids: Vec<String> = agent::Entity::find()
        .select_only()
        .column(agent::Column::Id)
        .filter(agent::Column::OwnerId.eq(owner_id))
        .into_tuple()
        .all(db)
        .await?;
    super::status::revoke_owned_agent_tokens(db, &ids, now).await?;
    client::Entity::delete_many()
        .filter(
            client::Column::ClientId.in_subquery(
                Query::select()
                    .column(agent::Column::Id)
                    .from(agent::Entity)
                    .and_where(agent::Column::OwnerId.eq(owner_id))
                    .to_owned(),
            ),
        )
        .exec(db)
        .await?;
    agent::Entity::delete_many()
        .filter(agent::Column::OwnerId.eq(owner_id))
        .exec(db)
        .await?;
    Ok(ids)
}

/// The second pass of [`delete_owned`], after the commit (see
/// [`revoked_after_commit`]).
pub async fn revoke_after_deletion(
    db: &impl ConnectionTrait,
    ids: &[String],
    now: i64,
) -> StoreResult<()> {
    super::status::revoke_owned_agent_tokens(db, ids, now).await?;
    Ok(())
}
