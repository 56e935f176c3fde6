//! Security events (OpenID SSF 1.0 push, RFC 8935): the receivers an
//! operator registered, and the outbox of SETs for them.
//!
//! The outbox is written by [`enqueue`], which `audit::insert` calls for
//! every audit row it writes: the changes that end sessions (the kill
//! switch, an agent deleted, an agent key removed, a consent withdrawn, a
//! user deleted) are all audited inside their own transaction, so the
//! outbox rows commit or roll back with the change itself.
//!
//! Rows are claimed with a lease (an `UPDATE … WHERE leased_until_ms <=
//! now`, `FOR UPDATE SKIP LOCKED` on PostgreSQL), so two nodes never push
//! the same row at the same time; a node that dies holding a lease leaves
//! its rows to others once the lease runs out. Delivery is therefore at
//! least once, and receivers deduplicate by `jti` (RFC 8935 §2).

use entity::{event_receiver as receiver, security_event as event};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, NotSet, Order, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::{Value, json};

use super::audit::{self, AuditEvent};
use super::{StoreError, StoreResult};

pub use entity::event_receiver::Model as ReceiverRow;
pub use entity::security_event::Model as EventRow;

/// CAEP 1.0 §3.1.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP 1.0 §3.3.
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";

/// CAEP `credential_type` for an agent's key. CAEP 1.0 §3.3 allows "any
/// other credential type supported mutually by the Transmitter and the
/// Receiver"; none of its list (password, x509, fido2, …) is a bare
/// public key an agent signs client assertions with.
pub const CREDENTIAL_TYPE_JWK: &str = "jwk";

pub const PENDING: &str = "pending";
pub const FAILED: &str = "failed";

/// Undelivered SETs kept per receiver; beyond, the oldest are dropped
/// (counted on the receiver and audited). A receiver that stays away
/// loses the oldest news rather than growing the table without bound.
pub const MAX_QUEUED_PER_RECEIVER: u64 = 10_000;

/// One event about one subject, before it is addressed to receivers.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub event_type: &'static str,
    /// SSF 1.0 §3 `sub_id`, `iss` members left out (the issuer adds them).
    pub sub_id: Value,
    /// The event object; `event_timestamp` included.
    pub event: Value,
}

fn iss_sub(sub: &str) -> Value {
    json!({ "format": "iss_sub", "sub": sub })
}

/// CAEP 1.0 §2 `initiating_entity`: the CLI is an operator; anyone else
/// acting through the console is the owner (or an operator acting as one).
fn initiating_entity(actor: Option<&str>) -> &'static str {
    match actor {
        Some("cli") => "admin",
        _ => "user",
    }
}

/// What an audit row means for sessions elsewhere: the SETs it becomes
/// (none for most rows).
pub fn signals(e: &AuditEvent) -> Vec<Signal> {
    let session_revoked = |sub_id: Value, why: &str| Signal {
        event_type: SESSION_REVOKED,
        sub_id,
        event: json!({
            "event_timestamp": e.at,
            "initiating_entity": initiating_entity(e.subject.as_deref()),
            "reason_admin": { "en": why },
        }),
    };
    match e.event {
        "agent.disabled" | "agent.deleted" => {
            let Some(agent) = e.client_id.as_deref() else {
                return Vec::new();
            };
            let why = match e.event {
                "agent.disabled" => "agent disabled (kill switch)",
                _ => "agent deleted",
            };
            vec![session_revoked(iss_sub(agent), why)]
        }
        "agent.keys_changed" => {
            let Some(agent) = e.client_id.as_deref() else {
                return Vec::new();
            };
            let removed = e.detail["removed_keys"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            removed
                .iter()
                .map(|key| {
                    let mut event = json!({
                        "credential_type": CREDENTIAL_TYPE_JWK,
                        "change_type": "revoke",
                        "event_timestamp": e.at,
                        "initiating_entity": initiating_entity(e.subject.as_deref()),
                        "reason_admin": { "en": "agent key removed" },
                    });
                    if let Some(kid) = key["kid"].as_str() {
                        event["friendly_name"] = json!(kid);
                    }
                    // An additional field (SSF 1.0 §4.2.3): the RFC 7638
                    // thumbprint of the removed key.
                    if let Some(jkt) = key["jkt"].as_str() {
                        event["jkt"] = json!(jkt);
                    }
                    Signal {
                        event_type: CREDENTIAL_CHANGE,
                        sub_id: iss_sub(agent),
                        event,
                    }
                })
                .collect()
        }
        // The user's sessions at that one client (SSF 1.0 §3.3 complex
        // subject: user and application together name them).
        "consent.withdrawn" => match (e.subject.as_deref(), e.client_id.as_deref()) {
            (Some(user), Some(client)) => vec![session_revoked(
                json!({
                    "format": "complex",
                    "user": iss_sub(user),
                    "application": { "format": "opaque", "id": client },
                }),
                "consent withdrawn",
            )],
            _ => Vec::new(),
        },
        // The user, and every agent they owned (deleted with them).
        "user.deleted" => {
            let Some(user) = e.detail["user_id"].as_str() else {
                return Vec::new();
            };
            let mut out = vec![session_revoked(iss_sub(user), "user deleted")];
            for agent in e.detail["agents"].as_array().into_iter().flatten() {
                if let Some(agent) = agent.as_str() {
                    out.push(session_revoked(iss_sub(agent), "owner deleted"));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

fn random_id() -> StoreResult<String> {
    crate::crypto::random_id().map_err(|e| StoreError::unavailable(e.to_string()))
}

/// Writes one outbox row per signal of `e` per registered receiver, and
/// keeps each receiver's queue within [`MAX_QUEUED_PER_RECEIVER`]. Called
/// by `audit::insert`, inside the caller's transaction. On PostgreSQL it
/// also notifies the other nodes (delivered when the transaction commits).
pub(super) async fn enqueue(db: &impl ConnectionTrait, e: &AuditEvent) -> StoreResult<usize> {
    // Most audit rows cause none ([`signals`] matches the event name
    // first, allocating nothing).
    let signals = signals(e);
    if signals.is_empty() {
        return Ok(0);
    }
    let receivers: Vec<String> = receiver::Entity::find()
        .select_only()
        .column(receiver::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    if receivers.is_empty() {
        return Ok(0);
    }
    let txn = random_id()?;
    let mut rows = Vec::with_capacity(receivers.len() * signals.len());
    for r in &receivers {
        for s in &signals {
            rows.push(event::ActiveModel {
                id: NotSet,
                receiver_id: Set(r.clone()),
                jti: Set(random_id()?),
                txn: Set(txn.clone()),
                event_type: Set(s.event_type.to_string()),
                sub_id: Set(s.sub_id.clone()),
                event: Set(s.event.clone()),
                created_at: Set(e.at),
                state: Set(PENDING.into()),
                attempts: Set(0),
                next_attempt_ms: Set(0),
                leased_until_ms: Set(0),
                lease: Set(None),
                last_error: Set(None),
            });
        }
    }
    let written = rows.len();
    for chunk in rows.chunks(500) {
        event::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(db)
            .await?;
    }
    for r in &receivers {
        drop_overflow(db, r, e.at).await?;
    }
    if super::is_shared(db) {
        super::notify(db, CHANNEL, "").await?;
    }
    Ok(written)
}

/// PostgreSQL channel on which an enqueue wakes every node's worker.
pub const CHANNEL: &str = "agentauth_security_events";

/// Drops a receiver's oldest pending rows beyond the bound, counts them
/// on the receiver and audits the drop.
async fn drop_overflow(db: &impl ConnectionTrait, receiver_id: &str, now: i64) -> StoreResult<()> {
    let pending = event::Entity::find()
        .filter(event::Column::ReceiverId.eq(receiver_id))
        .filter(event::Column::State.eq(PENDING))
        .count(db)
        .await?;
    if pending <= MAX_QUEUED_PER_RECEIVER {
        return Ok(());
    }
    let oldest = Query::select()
        .column(event::Column::Id)
        .from(event::Entity)
        .and_where(event::Column::ReceiverId.eq(receiver_id))
        .and_where(event::Column::State.eq(PENDING))
        .order_by(event::Column::Id, Order::Asc)
        .limit(pending - MAX_QUEUED_PER_RECEIVER)
        .to_owned();
    let dropped = event::Entity::delete_many()
        .filter(event::Column::Id.in_subquery(oldest))
        .exec(db)
        .await?
        .rows_affected;
    receiver::Entity::update_many()
        .col_expr(
            receiver::Column::Dropped,
            Expr::col(receiver::Column::Dropped).add(i64::try_from(dropped).unwrap_or(i64::MAX)),
        )
        .filter(receiver::Column::Id.eq(receiver_id))
        .exec(db)
        .await?;
    audit::insert_row(
        db,
        AuditEvent {
            at: now,
            event: "security_event.dropped",
            client_id: None,
            subject: None,
            ip: None,
            detail: json!({ "receiver": receiver_id, "dropped": dropped,
                            "bound": MAX_QUEUED_PER_RECEIVER }),
        },
    )
    .await
}

/// A receiver to register (the caller checked and sealed everything).
pub struct NewReceiver {
    pub id: String,
    pub endpoint_url: String,
    pub audience: String,
    pub authorization_sealed: Option<Vec<u8>>,
    pub created_at: i64,
}

/// Registers a receiver with its audit row.
pub async fn add_receiver<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    new: NewReceiver,
    event: AuditEvent,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    receiver::Entity::insert(receiver::ActiveModel {
        id: Set(new.id),
        endpoint_url: Set(new.endpoint_url),
        audience: Set(new.audience),
        authorization_sealed: Set(new.authorization_sealed),
        created_at: Set(new.created_at),
        delivered: Set(0),
        dropped: Set(0),
        failures: Set(0),
        retry_at_ms: Set(0),
        last_error: Set(None),
        last_error_at: Set(None),
        last_delivered_at: Set(None),
    })
    .exec_without_returning(&txn)
    .await?;
    audit::insert(&txn, event).await?;
    txn.commit().await?;
    Ok(())
}

/// Removes a receiver and everything queued for it, with its audit row.
/// `false`: no such receiver.
pub async fn remove_receiver<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    id: &str,
    event: AuditEvent,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    let gone = receiver::Entity::delete_by_id(id.to_string())
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !gone {
        return Ok(false);
    }
    event::Entity::delete_many()
        .filter(event::Column::ReceiverId.eq(id))
        .exec(&txn)
        .await?;
    audit::insert(&txn, event).await?;
    txn.commit().await?;
    Ok(true)
}

pub async fn receiver(db: &impl ConnectionTrait, id: &str) -> StoreResult<Option<ReceiverRow>> {
    Ok(receiver::Entity::find_by_id(id.to_string()).one(db).await?)
}

/// A receiver with its queue: what the operator page and the CLI list.
#[derive(Clone, Debug)]
pub struct ReceiverStatus {
    pub row: ReceiverRow,
    pub pending: i64,
    pub failed: i64,
}

/// Every receiver, oldest first, with its pending and failed counts.
pub async fn receivers(db: &impl ConnectionTrait) -> StoreResult<Vec<ReceiverStatus>> {
    let rows = receiver::Entity::find()
        .order_by_asc(receiver::Column::CreatedAt)
        .order_by_asc(receiver::Column::Id)
        .all(db)
        .await?;
    let counts: Vec<(String, String, i64)> = event::Entity::find()
        .select_only()
        .column(event::Column::ReceiverId)
        .column(event::Column::State)
        .column_as(event::Column::Id.count(), "n")
        .group_by(event::Column::ReceiverId)
        .group_by(event::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let count = |state: &str| {
                counts
                    .iter()
                    .filter(|(r, s, _)| *r == row.id && s == state)
                    .map(|(_, _, n)| *n)
                    .sum()
            };
            ReceiverStatus {
                pending: count(PENDING),
                failed: count(FAILED),
                row,
            }
        })
        .collect())
}

/// The receivers not backing off at `now_ms`.
fn ready(now_ms: i64) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(receiver::Column::Id)
        .from(receiver::Entity)
        .and_where(receiver::Column::RetryAtMs.lte(now_ms))
        .to_owned()
}

/// A row claimed for delivery, with its receiver.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub row: EventRow,
    pub receiver: ReceiverRow,
}

/// Leases up to `limit` due rows (oldest first) of receivers not backing
/// off, until `now_ms + lease_ms`; no other node claims them meanwhile.
pub async fn claim(
    db: &impl ConnectionTrait,
    now_ms: i64,
    lease_ms: i64,
    limit: u64,
) -> StoreResult<Vec<Claimed>> {
    let is_due = || {
        Condition::all()
            .add(event::Column::State.eq(PENDING))
            .add(event::Column::NextAttemptMs.lte(now_ms))
            .add(event::Column::LeasedUntilMs.lte(now_ms))
            .add(event::Column::ReceiverId.in_subquery(ready(now_ms)))
    };
    // Nothing due (the common case, every poll of every node): a read,
    // no write transaction.
    if event::Entity::find()
        .filter(is_due())
        .one(db)
        .await?
        .is_none()
    {
        return Ok(Vec::new());
    }
    let token = random_id()?;
    let mut due = Query::select();
    due.column(event::Column::Id)
        .from(event::Entity)
        .cond_where(is_due())
        .order_by(event::Column::Id, Order::Asc)
        .limit(limit);
    if super::is_shared(db) {
        due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let leased = event::Entity::update_many()
        .col_expr(event::Column::LeasedUntilMs, Expr::value(now_ms + lease_ms))
        .col_expr(event::Column::Lease, Expr::value(token.clone()))
        .filter(event::Column::Id.in_subquery(due.to_owned()))
        // Checked again on the locked row: a row another node leased
        // while this statement waited for it is skipped.
        .filter(event::Column::LeasedUntilMs.lte(now_ms))
        .exec(db)
        .await?
        .rows_affected;
    if leased == 0 {
        return Ok(Vec::new());
    }
    let rows = event::Entity::find()
        .filter(event::Column::Lease.eq(token))
        .order_by_asc(event::Column::Id)
        .all(db)
        .await?;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.receiver_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let receivers = receiver::Entity::find()
        .filter(receiver::Column::Id.is_in(ids))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let receiver = receivers.iter().find(|r| r.id == row.receiver_id)?.clone();
            Some(Claimed { row, receiver })
        })
        .collect())
}

/// The receiver answered 202: the row goes, the receiver's counters move.
pub async fn delivered(
    db: &impl ConnectionTrait,
    id: i64,
    receiver_id: &str,
    now: i64,
) -> StoreResult<()> {
    event::Entity::delete_by_id(id).exec(db).await?;
    receiver::Entity::update_many()
        .col_expr(
            receiver::Column::Delivered,
            Expr::col(receiver::Column::Delivered).add(1),
        )
        .col_expr(receiver::Column::Failures, Expr::value(0))
        .col_expr(receiver::Column::RetryAtMs, Expr::value(0))
        .col_expr(receiver::Column::LastDeliveredAt, Expr::value(now))
        .filter(receiver::Column::Id.eq(receiver_id))
        .exec(db)
        .await?;
    Ok(())
}

/// The receiver refused this SET for good (RFC 8935 §2.3, 400): the row
/// stays as `failed` with the reason, never retried.
pub async fn refused(
    db: &impl ConnectionTrait,
    id: i64,
    receiver_id: &str,
    reason: &str,
    now: i64,
) -> StoreResult<()> {
    event::Entity::update_many()
        .col_expr(event::Column::State, Expr::value(FAILED))
        .col_expr(
            event::Column::Attempts,
            Expr::col(event::Column::Attempts).add(1),
        )
        .col_expr(event::Column::LastError, Expr::value(reason))
        .col_expr(event::Column::Lease, Expr::value(Option::<String>::None))
        .col_expr(event::Column::LeasedUntilMs, Expr::value(0))
        .filter(event::Column::Id.eq(id))
        .exec(db)
        .await?;
    receiver_error(db, receiver_id, reason, now, None).await
}

/// A push failed in a way that may pass (5xx, timeout, refused
/// connection): the row waits until `retry_at_ms`, and so does every row
/// of its receiver (`failures` is the backoff's new exponent).
pub async fn retry_later(
    db: &impl ConnectionTrait,
    id: i64,
    receiver_id: &str,
    error: &str,
    now: i64,
    retry_at_ms: i64,
    failures: i32,
) -> StoreResult<()> {
    event::Entity::update_many()
        .col_expr(
            event::Column::Attempts,
            Expr::col(event::Column::Attempts).add(1),
        )
        .col_expr(event::Column::NextAttemptMs, Expr::value(retry_at_ms))
        .col_expr(event::Column::LastError, Expr::value(error))
        .col_expr(event::Column::Lease, Expr::value(Option::<String>::None))
        .col_expr(event::Column::LeasedUntilMs, Expr::value(0))
        .filter(event::Column::Id.eq(id))
        .exec(db)
        .await?;
    receiver_error(db, receiver_id, error, now, Some((retry_at_ms, failures))).await
}

async fn receiver_error(
    db: &impl ConnectionTrait,
    receiver_id: &str,
    error: &str,
    now: i64,
    backoff: Option<(i64, i32)>,
) -> StoreResult<()> {
    let mut update = receiver::Entity::update_many()
        .col_expr(receiver::Column::LastError, Expr::value(error))
        .col_expr(receiver::Column::LastErrorAt, Expr::value(now));
    if let Some((retry_at_ms, failures)) = backoff {
        update = update
            .col_expr(receiver::Column::RetryAtMs, Expr::value(retry_at_ms))
            .col_expr(receiver::Column::Failures, Expr::value(failures));
    }
    update
        .filter(receiver::Column::Id.eq(receiver_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Gives leased rows back untouched (not attempted: their receiver was
/// found down on another row, or this node could not sign).
pub async fn release(db: &impl ConnectionTrait, ids: &[i64]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    event::Entity::update_many()
        .col_expr(event::Column::Lease, Expr::value(Option::<String>::None))
        .col_expr(event::Column::LeasedUntilMs, Expr::value(0))
        .filter(event::Column::Id.is_in(ids.iter().copied()))
        .exec(db)
        .await?;
    Ok(())
}

/// Pending rows written before `cutoff` (seconds) become `failed`: the
/// maximum age of an undelivered SET has passed.
pub async fn expire(db: &impl ConnectionTrait, cutoff: i64, reason: &str) -> StoreResult<u64> {
    Ok(event::Entity::update_many()
        .col_expr(event::Column::State, Expr::value(FAILED))
        .col_expr(event::Column::LastError, Expr::value(reason))
        .filter(event::Column::State.eq(PENDING))
        .filter(event::Column::CreatedAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}

/// Failed rows are kept a week for the operator, then deleted.
pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    Ok(event::Entity::delete_many()
        .filter(event::Column::State.eq(FAILED))
        .filter(event::Column::CreatedAt.lt(now - 7 * 86_400))
        .exec(db)
        .await?
        .rows_affected)
}

/// The outbox rows of one receiver, oldest first (tests and the CLI).
pub async fn queued(db: &impl ConnectionTrait, receiver_id: &str) -> StoreResult<Vec<EventRow>> {
    Ok(event::Entity::find()
        .filter(event::Column::ReceiverId.eq(receiver_id))
        .order_by_asc(event::Column::Id)
        .all(db)
        .await?)
}

/// Sets a receiver's row fields that a test or an operator tool needs to
/// move (e.g. `retry_at_ms` to 0 to push now).
pub async fn retry_now(db: &impl ConnectionTrait, receiver_id: &str) -> StoreResult<()> {
    receiver::Entity::update_many()
        .col_expr(receiver::Column::RetryAtMs, Expr::value(0))
        .filter(receiver::Column::Id.eq(receiver_id))
        .exec(db)
        .await?;
    event::Entity::update_many()
        .col_expr(event::Column::NextAttemptMs, Expr::value(0))
        .filter(event::Column::ReceiverId.eq(receiver_id))
        .filter(event::Column::State.eq(PENDING))
        .exec(db)
        .await?;
    Ok(())
}
