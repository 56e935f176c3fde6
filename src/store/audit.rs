//! The audit table: who did what, when, from where. Never a secret.

use entity::audit_log;
use sea_orm::{ConnectionTrait, EntityTrait, NotSet, QueryOrder, QuerySelect, Set};

use super::StoreResult;

#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub at: i64,
    pub event: &'static str,
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
}

fn row(e: AuditEvent) -> audit_log::ActiveModel {
    audit_log::ActiveModel {
        id: NotSet,
        at: Set(e.at),
        event: Set(e.event.to_string()),
        client_id: Set(e.client_id),
        subject: Set(e.subject),
        ip: Set(e.ip),
        detail: Set(e.detail),
    }
}

/// Writes one audit row, inside the caller's transaction when it has
/// one, and with it the security events the change causes (SETs for the
/// registered receivers, [`super::events::enqueue`]): the outbox commits
/// or rolls back with the change. The batched path ([`insert_many`],
/// the audit sink) never causes events: nothing that ends a session is
/// audited there.
pub async fn insert(db: &impl ConnectionTrait, event: AuditEvent) -> StoreResult<()> {
    super::events::enqueue(db, &event).await?;
    insert_row(db, event).await
}

/// The audit row alone.
pub(super) async fn insert_row(db: &impl ConnectionTrait, event: AuditEvent) -> StoreResult<()> {
    audit_log::Entity::insert(row(event))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn insert_many(db: &impl ConnectionTrait, events: Vec<AuditEvent>) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    audit_log::Entity::insert_many(events.into_iter().map(row))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The most recent events, newest first.
pub async fn recent(db: &impl ConnectionTrait, limit: u64) -> StoreResult<Vec<audit_log::Model>> {
    Ok(audit_log::Entity::find()
        .order_by_desc(audit_log::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// The most recent events about one party (as `client_id` or `subject`),
/// newest first: an agent's activity on the owner's console.
pub async fn about(
    db: &impl ConnectionTrait,
    id: &str,
    limit: u64,
) -> StoreResult<Vec<audit_log::Model>> {
    use sea_orm::{ColumnTrait, Condition, QueryFilter};
    Ok(audit_log::Entity::find()
        .filter(
            Condition::any()
                .add(audit_log::Column::ClientId.eq(id))
                .add(audit_log::Column::Subject.eq(id)),
        )
        .order_by_desc(audit_log::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// What the operator's audit page filters on (all optional, exact).
#[derive(Debug, Default)]
pub struct Filter {
    /// `subject`: who acted (a user id, an agent id, `cli`).
    pub actor: Option<String>,
    pub client_id: Option<String>,
    /// An agent: as the client or as the subject.
    pub agent: Option<String>,
    pub event: Option<String>,
    /// Rows older than this id (the page cursor).
    pub before: Option<i64>,
}

/// The newest `limit` events matching `filter`, newest first.
pub async fn search(
    db: &impl ConnectionTrait,
    filter: &Filter,
    limit: u64,
) -> StoreResult<Vec<audit_log::Model>> {
    use sea_orm::{ColumnTrait, Condition, QueryFilter};
    let mut query = audit_log::Entity::find();
    if let Some(a) = &filter.actor {
        query = query.filter(audit_log::Column::Subject.eq(a.as_str()));
    }
    if let Some(c) = &filter.client_id {
        query = query.filter(audit_log::Column::ClientId.eq(c.as_str()));
    }
    if let Some(a) = &filter.agent {
        query = query.filter(
            Condition::any()
                .add(audit_log::Column::ClientId.eq(a.as_str()))
                .add(audit_log::Column::Subject.eq(a.as_str())),
        );
    }
    if let Some(e) = &filter.event {
        query = query.filter(audit_log::Column::Event.eq(e.as_str()));
    }
    if let Some(b) = filter.before {
        query = query.filter(audit_log::Column::Id.lt(b));
    }
    Ok(query
        .order_by_desc(audit_log::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Per agent (as client): when it last got a token, and how many it got
/// since `since` (the access-token lifetime ago: tokens that may still be
/// live, unless revoked). Two grouped queries over the client index.
pub async fn token_use(
    db: &impl ConnectionTrait,
    client_ids: &[String],
    since: i64,
) -> StoreResult<std::collections::HashMap<String, (i64, i64)>> {
    use sea_orm::{ColumnTrait, FromQueryResult, QueryFilter, QuerySelect};
    #[derive(FromQueryResult)]
    struct Row {
        client_id: String,
        value: i64,
    }
    let base = || {
        audit_log::Entity::find()
            .select_only()
            .column(audit_log::Column::ClientId)
            .filter(audit_log::Column::Event.eq("token.issued"))
            .filter(audit_log::Column::ClientId.is_in(client_ids.iter().map(String::as_str)))
            .group_by(audit_log::Column::ClientId)
    };
    let mut out = std::collections::HashMap::new();
    if client_ids.is_empty() {
        return Ok(out);
    }
    for r in base()
        .column_as(audit_log::Column::At.max(), "value")
        .into_model::<Row>()
        .all(db)
        .await?
    {
        out.insert(r.client_id, (r.value, 0));
    }
    for r in base()
        .column_as(audit_log::Column::Id.count(), "value")
        .filter(audit_log::Column::At.gt(since))
        .into_model::<Row>()
        .all(db)
        .await?
    {
        out.entry(r.client_id).or_insert((0, 0)).1 = r.value;
    }
    Ok(out)
}
