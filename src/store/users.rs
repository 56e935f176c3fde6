//! Human owner accounts and their login sessions.

use entity::{session, user};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use super::StoreResult;

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

pub async fn set_password(
    db: &impl ConnectionTrait,
    username: &str,
    password_hash: String,
) -> StoreResult<bool> {
    let r = user::Entity::update_many()
        .col_expr(
            user::Column::PasswordHash,
            sea_orm::sea_query::Expr::value(password_hash),
        )
        .filter(user::Column::Username.eq(username))
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Deletes the user and every session of theirs.
pub async fn delete(db: &impl ConnectionTrait, username: &str) -> StoreResult<Option<String>> {
    let Some(u) = by_username(db, username).await? else {
        return Ok(None);
    };
    session::Entity::delete_many()
        .filter(session::Column::UserId.eq(u.id.clone()))
        .exec(db)
        .await?;
    user::Entity::delete_by_id(u.id.clone()).exec(db).await?;
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
