//! Registered clients.

use entity::client;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};

use super::audit::{self, AuditEvent};

use super::StoreResult;
use crate::oauth::client_kind::ClientKind;
use crate::oauth::client_metadata::ClientMetadata;

/// A client as the rest of the server sees it. Secrets are hashes only.
#[derive(Clone, Debug)]
pub struct ClientRecord {
    pub client_id: String,
    pub client_secret_hash: Option<Vec<u8>>,
    pub registration_access_token_hash: Option<Vec<u8>>,
    pub metadata: ClientMetadata,
    pub client_id_issued_at: i64,
    pub kind: ClientKind,
    /// Resource URIs whose tokens the client may introspect (`*`: any).
    pub introspects: Vec<String>,
}

impl TryFrom<client::Model> for ClientRecord {
    type Error = DbErr;

    fn try_from(m: client::Model) -> Result<Self, DbErr> {
        let metadata = serde_json::from_value(m.metadata).map_err(|e| {
            DbErr::Custom(format!(
                "client {} has unreadable metadata: {e}",
                m.client_id
            ))
        })?;
        let kind = m
            .kind
            .parse()
            .map_err(|e| DbErr::Custom(format!("client {}: {e}", m.client_id)))?;
        let introspects = match m.introspects {
            Some(v) => serde_json::from_value(v).map_err(|e| {
                DbErr::Custom(format!(
                    "client {} has unreadable introspects: {e}",
                    m.client_id
                ))
            })?,
            None => Vec::new(),
        };
        Ok(Self {
            kind,
            introspects,
            client_id: m.client_id,
            client_secret_hash: m.client_secret_hash,
            registration_access_token_hash: m.registration_access_token_hash,
            metadata,
            client_id_issued_at: m.client_id_issued_at,
        })
    }
}

fn metadata_json(metadata: &ClientMetadata) -> Result<serde_json::Value, DbErr> {
    serde_json::to_value(metadata).map_err(|e| DbErr::Custom(e.to_string()))
}

pub async fn insert(db: &impl ConnectionTrait, record: &ClientRecord) -> StoreResult<()> {
    let row = client::ActiveModel {
        client_id: Set(record.client_id.clone()),
        client_secret_hash: Set(record.client_secret_hash.clone()),
        registration_access_token_hash: Set(record.registration_access_token_hash.clone()),
        metadata: Set(metadata_json(&record.metadata)?),
        client_id_issued_at: Set(record.client_id_issued_at),
        updated_at: Set(record.client_id_issued_at),
        kind: Set(record.kind.as_str().to_string()),
        introspects: Set((!record.introspects.is_empty())
            .then(|| serde_json::Value::from(record.introspects.clone()))),
        last_used_at: Set(None),
    };
    client::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn get(db: &impl ConnectionTrait, client_id: &str) -> StoreResult<Option<ClientRecord>> {
    let row = client::Entity::find_by_id(client_id.to_string())
        .one(db)
        .await?;
    Ok(row.map(ClientRecord::try_from).transpose()?)
}

pub async fn list(db: &impl ConnectionTrait) -> StoreResult<Vec<ClientRecord>> {
    let rows = client::Entity::find()
        .order_by_asc(client::Column::ClientIdIssuedAt)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(ClientRecord::try_from)
        .collect::<Result<_, _>>()?)
}

/// One page of clients by id, after `after` (the operator's client list).
pub async fn page(
    db: &impl ConnectionTrait,
    after: Option<&str>,
    limit: u64,
) -> StoreResult<Vec<ClientRecord>> {
    use sea_orm::QuerySelect;
    let mut query = client::Entity::find();
    if let Some(a) = after {
        query = query.filter(client::Column::ClientId.gt(a));
    }
    let rows = query
        .order_by_asc(client::Column::ClientId)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(ClientRecord::try_from)
        .collect::<Result<_, _>>()?)
}

/// Replaces the metadata (RFC 7592 §2.2). Returns `false` if the client is gone.
pub async fn update_metadata(
    db: &impl ConnectionTrait,
    client_id: &str,
    metadata: &ClientMetadata,
    now: i64,
) -> StoreResult<bool> {
    let Some(row) = client::Entity::find_by_id(client_id.to_string())
        .one(db)
        .await?
    else {
        return Ok(false);
    };
    let mut row: client::ActiveModel = row.into();
    row.metadata = Set(metadata_json(metadata)?);
    row.updated_at = Set(now);
    row.update(db).await?;
    Ok(true)
}

pub async fn delete(db: &impl ConnectionTrait, client_id: &str) -> StoreResult<bool> {
    let result = client::Entity::delete_by_id(client_id.to_string())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Marks a client used now, at most once a day (one conditional write).
pub async fn touch(db: &impl ConnectionTrait, client_id: &str, now: i64) -> StoreResult<()> {
    client::Entity::update_many()
        .col_expr(client::Column::LastUsedAt, Expr::value(now))
        .filter(client::Column::ClientId.eq(client_id))
        .filter(
            client::Column::LastUsedAt
                .is_null()
                .or(client::Column::LastUsedAt.lt(now - 86_400)),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes self-registered (`dynamic`) clients idle since `cutoff` (last
/// token, or registration) that hold no consent and no live refresh
/// token; at most 500 per call. Returns their ids.
pub async fn reap_idle(
    db: &impl ConnectionTrait,
    cutoff: i64,
    now: i64,
) -> StoreResult<Vec<String>> {
    use entity::{consent, refresh_token as rt};
    use sea_orm::QuerySelect;
    use sea_orm::sea_query::Query;
    let idle = || {
        Condition::all()
            .add(client::Column::Kind.eq(ClientKind::Dynamic.as_str()))
            .add(client::Column::ClientIdIssuedAt.lt(cutoff))
            .add(
                client::Column::LastUsedAt
                    .is_null()
                    .or(client::Column::LastUsedAt.lt(cutoff)),
            )
            .add(
                client::Column::ClientId.not_in_subquery(
                    Query::select()
                        .column(consent::Column::ClientId)
                        .from(consent::Entity)
                        .to_owned(),
                ),
            )
            .add(
                client::Column::ClientId.not_in_subquery(
                    Query::select()
                        .column(rt::Column::ClientId)
                        .from(rt::Entity)
                        .and_where(rt::Column::RevokedAt.is_null())
                        .and_where(rt::Column::ExpiresAt.gt(now))
                        .to_owned(),
                ),
            )
    };
    let ids: Vec<String> = client::Entity::find()
        .select_only()
        .column(client::Column::ClientId)
        .filter(idle())
        .limit(500)
        .into_tuple()
        .all(db)
        .await?;
    let mut reaped = Vec::with_capacity(ids.len());
    for id in ids {
        // The same conditions again: a client used meanwhile is kept.
        let r = client::Entity::delete_many()
            .filter(idle())
            .filter(client::Column::ClientId.eq(id.as_str()))
            .exec(db)
            .await?;
        if r.rows_affected == 1 {
            reaped.push(id);
        }
    }
    Ok(reaped)
}

/// Inserts a client and its audit row in one transaction.
pub async fn insert_audited<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    record: &ClientRecord,
    event: AuditEvent,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    insert(&txn, record).await?;
    audit::insert(&txn, event).await?;
    txn.commit().await?;
    Ok(())
}

/// Updates a client's metadata and writes its audit row in one transaction.
pub async fn update_audited<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    client_id: &str,
    metadata: &ClientMetadata,
    now: i64,
    event: AuditEvent,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    if !update_metadata(&txn, client_id, metadata, now).await? {
        return Ok(false);
    }
    audit::insert(&txn, event).await?;
    txn.commit().await?;
    Ok(true)
}

/// Deletes a client and writes its audit row in one transaction.
pub async fn delete_audited<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    client_id: &str,
    event: AuditEvent,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    if !delete(&txn, client_id).await? {
        return Ok(false);
    }
    audit::insert(&txn, event).await?;
    txn.commit().await?;
    Ok(true)
}
