//! Human owner accounts and their login sessions.

use entity::{session, user};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};

use super::StoreResult;

/// The stored hash of an account that signs in by passkey only.
pub const NO_PASSWORD: &str = "";

pub type User = user::Model;

pub async fn insert(db: &impl ConnectionTrait, user: User) -> StoreResult<bool> {
    let row: user::ActiveModel = user.into();
    match user::Entity::insert(row).exec_without_returning(db).await {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn by_username(db: &impl ConnectionTrait, username: &str) -> StoreResult<Option<User>> {
    Ok(user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(db)
        .await?)
}

pub async fn by_id(db: &impl ConnectionTrait, id: &str) -> StoreResult<Option<User>> {
    Ok(user::Entity::find_by_id(id.to_string()).one(db).await?)
}

pub async fn list(db: &impl ConnectionTrait) -> StoreResult<Vec<User>> {
    Ok(user::Entity::find()
        .order_by_asc(user::Column::Username)
        .all(db)
        .await?)
}

/// Sets a new password in one transaction that also ends every session
/// of the user and revokes their refresh families (whoever knew the old
/// password is signed out everywhere). `false`: no such user.
pub async fn set_password<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    username: &str,
    password_hash: String,
    now: i64,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    let Some(u) = by_username(&txn, username).await? else {
        return Ok(false);
    };
    user::Entity::update_many()
        .col_expr(
            user::Column::PasswordHash,
            sea_orm::sea_query::Expr::value(password_hash),
        )
        .filter(user::Column::Id.eq(u.id.clone()))
        .exec(&txn)
        .await?;
    session::Entity::delete_many()
        .filter(session::Column::UserId.eq(u.id.clone()))
        .exec(&txn)
        .await?;
    super::grants::revoke_user_grants(&txn, &u.id, now, false).await?;
    txn.commit().await?;
    Ok(true)
}

/// The audit row of a user's deletion by `actor` (`cli`, or an
/// operator's user id), for [`delete`] to complete.
pub fn deleted_event(now: i64, actor: &str) -> super::audit::AuditEvent {
    super::audit::AuditEvent {
        at: now,
        event: "user.deleted",
        client_id: None,
        subject: Some(actor.to_string()),
        ip: None,
        detail: serde_json::json!({}),
    }
}

/// Deletes the user in one transaction: their sessions, consents and
/// codes go, and every refresh family and access token they granted is
/// revoked. `event` (its name `user.deleted`, who and when) is written
/// in the same transaction, its `detail` completed with the user's id and
/// the ids of the agents deleted with them (each becomes a security event
/// for the registered receivers).
pub async fn delete<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    username: &str,
    now: i64,
    mut event: super::audit::AuditEvent,
) -> StoreResult<Option<String>> {
    let txn = db.begin().await?;
    let Some(u) = by_username(&txn, username).await? else {
        return Ok(None);
    };
    session::Entity::delete_many()
        .filter(session::Column::UserId.eq(u.id.clone()))
        .exec(&txn)
        .await?;
    super::grants::revoke_user_grants(&txn, &u.id, now, true).await?;
    // Their agents go too; tokens they hold turn inactive with them.
    let agents = super::agents::delete_owned(&txn, &u.id, now).await?;
    entity::passkey::Entity::delete_many()
        .filter(entity::passkey::Column::UserId.eq(u.id.clone()))
        .exec(&txn)
        .await?;
    user::Entity::delete_by_id(u.id.clone()).exec(&txn).await?;
    if let Some(detail) = event.detail.as_object_mut() {
        detail.insert("user_id".into(), u.id.clone().into());
        detail.insert("username".into(), u.username.clone().into());
        detail.insert("agents".into(), agents.clone().into());
    }
    super::audit::insert(&txn, event).await?;
    txn.commit().await?;
    super::agents::revoke_after_deletion(db, &agents, now).await?;
    Ok(Some(u.id))
}

pub async fn create_session(
    db: &impl ConnectionTrait,
    id_hash: [u8; 32],
    user_id: &str,
    now: i64,
    ttl: i64,
) -> StoreResult<()> {
    let row = session::ActiveModel {
        id_hash: Set(id_hash.to_vec()),
        user_id: Set(user_id.to_string()),
        auth_time: Set(now),
        expires_at: Set(now + ttl),
    };
    session::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn session(
    db: &impl ConnectionTrait,
    id_hash: [u8; 32],
    now: i64,
) -> StoreResult<Option<session::Model>> {
    Ok(session::Entity::find_by_id(id_hash.to_vec())
        .one(db)
        .await?
        .filter(|s| s.expires_at > now))
}

pub async fn delete_session(db: &impl ConnectionTrait, id_hash: [u8; 32]) -> StoreResult<()> {
    session::Entity::delete_by_id(id_hash.to_vec())
        .exec(db)
        .await?;
    Ok(())
}

/// Marks a user as an operator (or not).
pub async fn set_admin(db: &impl ConnectionTrait, id: &str, admin: bool) -> StoreResult<bool> {
    use sea_orm::sea_query::Expr;
    Ok(user::Entity::update_many()
        .col_expr(user::Column::Admin, Expr::value(admin))
        .filter(user::Column::Id.eq(id))
        .exec(db)
        .await?
        .rows_affected
        == 1)
}
