//! Passkeys and the single-use challenges of their ceremonies (issue 17).

use entity::{passkey, webauthn_challenge};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};

use super::StoreResult;

pub type PasskeyRow = passkey::Model;
pub type ChallengeRow = webauthn_challenge::Model;

/// Stores a new passkey. `false`: that credential id is registered
/// already (to this account or another).
pub async fn insert(db: &impl ConnectionTrait, row: PasskeyRow) -> StoreResult<bool> {
    let n = passkey::Entity::insert(passkey::ActiveModel::from(row))
        .on_conflict(
            OnConflict::column(passkey::Column::CredentialId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(n == 1)
}

/// The account's passkeys, oldest first.
pub async fn for_user(db: &impl ConnectionTrait, user_id: &str) -> StoreResult<Vec<PasskeyRow>> {
    Ok(passkey::Entity::find()
        .filter(passkey::Column::UserId.eq(user_id))
        .order_by_asc(passkey::Column::CreatedAt)
        .all(db)
        .await?)
}

pub async fn count_for_user(db: &impl ConnectionTrait, user_id: &str) -> StoreResult<u64> {
    Ok(passkey::Entity::find()
        .filter(passkey::Column::UserId.eq(user_id))
        .count(db)
        .await?)
}

pub async fn by_id(db: &impl ConnectionTrait, id: &str) -> StoreResult<Option<PasskeyRow>> {
    Ok(passkey::Entity::find_by_id(id.to_string()).one(db).await?)
}

pub async fn by_credential(
    db: &impl ConnectionTrait,
    credential_id: &[u8],
) -> StoreResult<Option<PasskeyRow>> {
    Ok(passkey::Entity::find()
        .filter(passkey::Column::CredentialId.eq(credential_id.to_vec()))
        .one(db)
        .await?)
}

/// Records a sign-in: the counter moves from `old` to `new` only if no
/// other sign-in moved it meanwhile (two assertions racing with one
/// counter value: one wins). `false`: it lost.
pub async fn record_use(
    db: &impl ConnectionTrait,
    id: &str,
    old: i64,
    new: i64,
    now: i64,
) -> StoreResult<bool> {
    let n = passkey::Entity::update_many()
        .col_expr(passkey::Column::SignCount, Expr::value(new))
        .col_expr(passkey::Column::LastUsedAt, Expr::value(now))
        .filter(passkey::Column::Id.eq(id))
        .filter(passkey::Column::SignCount.eq(old))
        .exec(db)
        .await?;
    Ok(n.rows_affected == 1)
}

/// Why a passkey could not be removed.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    NotFound,
    /// Another account's passkey.
    NotYours,
    /// It is the last way into an account that has no password.
    LastWayIn,
}

/// Removes one of the account's passkeys, unless the account would be
/// left with no way to sign in (checked in the same transaction).
pub async fn delete<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    user_id: &str,
    id: &str,
    audit: super::audit::AuditEvent,
) -> StoreResult<Removal> {
    let txn = db.begin().await?;
    match by_id(&txn, id).await? {
        None => return Ok(Removal::NotFound),
        Some(k) if k.user_id != user_id => return Ok(Removal::NotYours),
        Some(_) => {}
    }
    let Some(user) = super::users::by_id(&txn, user_id).await? else {
        return Ok(Removal::NotFound);
    };
    let keys = for_user(&txn, user_id).await?;
    if keys.len() == 1 && user.password_hash == super::users::NO_PASSWORD {
        return Ok(Removal::LastWayIn);
    }
    passkey::Entity::delete_many()
        .filter(passkey::Column::Id.eq(id))
        .filter(passkey::Column::UserId.eq(user_id))
        .exec(&txn)
        .await?;
    super::audit::insert(&txn, audit).await?;
    txn.commit().await?;
    Ok(Removal::Removed)
}

/// Drops the account's password, if it has a passkey to sign in with
/// (checked in the same transaction). `false`: it has none.
pub async fn remove_password<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    user_id: &str,
    audit: super::audit::AuditEvent,
) -> StoreResult<bool> {
    use entity::user;
    let txn = db.begin().await?;
    if count_for_user(&txn, user_id).await? == 0 {
        return Ok(false);
    }
    user::Entity::update_many()
        .col_expr(
            user::Column::PasswordHash,
            Expr::value(super::users::NO_PASSWORD),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec(&txn)
        .await?;
    super::audit::insert(&txn, audit).await?;
    txn.commit().await?;
    Ok(true)
}

pub async fn put_challenge(db: &impl ConnectionTrait, row: ChallengeRow) -> StoreResult<()> {
    webauthn_challenge::Entity::insert(webauthn_challenge::ActiveModel::from(row))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Redeems a ceremony's challenge: whoever deletes the row has it, so a
/// challenge answers one ceremony only, on any node.
pub async fn take_challenge(
    db: &impl ConnectionTrait,
    id_hash: [u8; 32],
    purpose: &str,
    now: i64,
) -> StoreResult<Option<ChallengeRow>> {
    let Some(row) = webauthn_challenge::Entity::find_by_id(id_hash.to_vec())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let deleted = webauthn_challenge::Entity::delete_by_id(id_hash.to_vec())
        .exec(db)
        .await?;
    Ok(Some(row)
        .filter(|r| deleted.rows_affected == 1 && r.purpose == purpose && r.expires_at > now))
}

pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    Ok(webauthn_challenge::Entity::delete_many()
        .filter(webauthn_challenge::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?
        .rows_affected)
}
