//! Authorization codes, refresh-token families and consents: the state of
//! the code flow. Every single-use step is one conditional write.

use entity::{authorization_code as code, consent, refresh_token as rt};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};

use super::{StoreResult, revocations};

pub type CodeRow = code::Model;
pub type RefreshRow = rt::Model;
pub type ConsentRow = consent::Model;

pub async fn insert_code(db: &impl ConnectionTrait, row: CodeRow) -> StoreResult<()> {
    let active: code::ActiveModel = row.into();
    code::Entity::insert(active)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn code(db: &impl ConnectionTrait, code_hash: [u8; 32]) -> StoreResult<Option<CodeRow>> {
    Ok(code::Entity::find_by_id(code_hash.to_vec()).one(db).await?)
}

/// Spends the code: exactly one caller sees `true`.
pub async fn consume_code(
    db: &impl ConnectionTrait,
    code_hash: [u8; 32],
    now: i64,
) -> StoreResult<bool> {
    let r = code::Entity::update_many()
        .col_expr(code::Column::ConsumedAt, Expr::value(now))
        .filter(code::Column::CodeHash.eq(code_hash.to_vec()))
        .filter(code::Column::ConsumedAt.is_null())
        .filter(code::Column::ExpiresAt.gt(now))
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Records what the code's redemption issued (for replay revocation).
pub async fn record_code_issuance(
    db: &impl ConnectionTrait,
    code_hash: [u8; 32],
    family_id: Option<&str>,
    access_jti: &str,
    access_exp: i64,
) -> StoreResult<()> {
    code::Entity::update_many()
        .col_expr(
            code::Column::FamilyId,
            Expr::value(family_id.map(str::to_string)),
        )
        .col_expr(code::Column::AccessJti, Expr::value(access_jti.to_string()))
        .col_expr(code::Column::AccessExp, Expr::value(access_exp))
        .filter(code::Column::CodeHash.eq(code_hash.to_vec()))
        .exec(db)
        .await?;
    Ok(())
}

/// RFC 6749 §4.1.2 / RFC 9700 §4.5: a replayed code revokes what it issued.
pub async fn revoke_code_issuance<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    row: &CodeRow,
    now: i64,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    if let (Some(jti), Some(exp)) = (&row.access_jti, row.access_exp) {
        revocations::revoke(&txn, jti, &row.client_id, exp, now).await?;
    }
    if let Some(family) = &row.family_id {
        revoke_family_in(&txn, family, now).await?;
    }
    txn.commit().await?;
    Ok(())
}

pub async fn insert_refresh(db: &impl ConnectionTrait, row: RefreshRow) -> StoreResult<()> {
    let active: rt::ActiveModel = row.into();
    rt::Entity::insert(active)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn refresh(
    db: &impl ConnectionTrait,
    token_hash: [u8; 32],
) -> StoreResult<Option<RefreshRow>> {
    Ok(rt::Entity::find_by_id(token_hash.to_vec()).one(db).await?)
}

/// Rotation: marks `old` rotated and inserts `new` in one transaction; the
/// conditional update makes exactly one of any concurrent callers win.
/// Returns `false` when `old` was already rotated, revoked or expired.
pub async fn rotate_refresh<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    old_hash: [u8; 32],
    new: RefreshRow,
    now: i64,
    retry_sealed: Option<Vec<u8>>,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    let r = rt::Entity::update_many()
        .col_expr(rt::Column::RotatedAt, Expr::value(now))
        .col_expr(rt::Column::RetrySealed, Expr::value(retry_sealed))
        .filter(rt::Column::TokenHash.eq(old_hash.to_vec()))
        .filter(rt::Column::RotatedAt.is_null())
        .filter(rt::Column::RevokedAt.is_null())
        .filter(rt::Column::ExpiresAt.gt(now))
        .exec(&txn)
        .await?;
    if r.rows_affected != 1 {
        txn.rollback().await?;
        return Ok(false);
    }
    insert_refresh(&txn, new).await?;
    txn.commit().await?;
    Ok(true)
}

/// The family's current token: neither rotated nor revoked.
pub async fn family_head(
    db: &impl ConnectionTrait,
    family_id: &str,
) -> StoreResult<Option<RefreshRow>> {
    Ok(rt::Entity::find()
        .filter(rt::Column::FamilyId.eq(family_id))
        .filter(rt::Column::RotatedAt.is_null())
        .filter(rt::Column::RevokedAt.is_null())
        .order_by_desc(rt::Column::Generation)
        .one(db)
        .await?)
}

/// Revokes every refresh token of a family and the access tokens issued
/// with them.
pub async fn revoke_family<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    family_id: &str,
    now: i64,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    revoke_family_in(&txn, family_id, now).await?;
    txn.commit().await?;
    Ok(())
}

async fn revoke_family_in(db: &impl ConnectionTrait, family_id: &str, now: i64) -> StoreResult<()> {
    rt::Entity::update_many()
        .col_expr(rt::Column::RevokedAt, Expr::value(now))
        .col_expr(
            rt::Column::RetrySealed,
            Expr::value(Option::<Vec<u8>>::None),
        )
        .filter(rt::Column::FamilyId.eq(family_id))
        .filter(rt::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    let members = rt::Entity::find()
        .filter(rt::Column::FamilyId.eq(family_id))
        .all(db)
        .await?;
    for m in members.iter().filter(|m| m.access_exp > now) {
        revocations::revoke(db, &m.access_jti, &m.client_id, m.access_exp, now).await?;
    }
    Ok(())
}

/// A user's live refresh-token families: the newest token of each.
pub async fn user_families(
    db: &impl ConnectionTrait,
    user_id: &str,
    now: i64,
) -> StoreResult<Vec<RefreshRow>> {
    let rows = rt::Entity::find()
        .filter(rt::Column::UserId.eq(user_id))
        .filter(rt::Column::RevokedAt.is_null())
        .filter(rt::Column::RotatedAt.is_null())
        .filter(rt::Column::ExpiresAt.gt(now))
        .order_by_desc(rt::Column::CreatedAt)
        .all(db)
        .await?;
    Ok(rows)
}

pub async fn consent(
    db: &impl ConnectionTrait,
    user_id: &str,
    client_id: &str,
) -> StoreResult<Option<ConsentRow>> {
    Ok(
        consent::Entity::find_by_id((user_id.to_string(), client_id.to_string()))
            .one(db)
            .await?,
    )
}

pub async fn save_consent(db: &impl ConnectionTrait, row: ConsentRow) -> StoreResult<()> {
    let active: consent::ActiveModel = row.into();
    consent::Entity::insert(active)
        .on_conflict(
            OnConflict::columns([consent::Column::UserId, consent::Column::ClientId])
                .update_columns([
                    consent::Column::Scope,
                    consent::Column::Resources,
                    consent::Column::GrantedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Records a consent, keeping what the user allowed the client before
/// (a step-up adds scopes and resources; it takes none away). Read and
/// write in one transaction.
pub async fn add_consent<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    mut row: ConsentRow,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    if let Some(earlier) = consent(&txn, &row.user_id, &row.client_id).await? {
        let scope = |text: &str| crate::oauth::scope::Scope::parse(text).unwrap_or_default();
        row.scope = scope(&earlier.scope).union(&scope(&row.scope)).to_string();
        let mut resources: Vec<String> =
            serde_json::from_value(earlier.resources).unwrap_or_default();
        let asked: Vec<String> = serde_json::from_value(row.resources.clone()).unwrap_or_default();
        for r in asked {
            if !resources.contains(&r) {
                resources.push(r);
            }
        }
        row.resources = serde_json::json!(resources);
    }
    save_consent(&txn, row).await?;
    txn.commit().await?;
    Ok(())
}

pub async fn user_consents(
    db: &impl ConnectionTrait,
    user_id: &str,
) -> StoreResult<Vec<ConsentRow>> {
    Ok(consent::Entity::find()
        .filter(consent::Column::UserId.eq(user_id))
        .all(db)
        .await?)
}

pub async fn delete_consent(
    db: &impl ConnectionTrait,
    user_id: &str,
    client_id: &str,
) -> StoreResult<()> {
    consent::Entity::delete_by_id((user_id.to_string(), client_id.to_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// Withdraws a user's consent to one client, in one transaction: the
/// consent goes, every refresh family the user granted that client is
/// revoked with its access tokens, and so are the access tokens of the
/// client's redeemed codes; what was derived from any of them by token
/// exchange goes with them ([`revocations::revoke`]). `event` (named
/// `consent.withdrawn`, with the user as `subject` and the client as
/// `client_id`) is written in the same transaction; it becomes a security
/// event for the registered receivers.
pub async fn withdraw_consent<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    user_id: &str,
    client_id: &str,
    now: i64,
    event: super::audit::AuditEvent,
) -> StoreResult<()> {
    let txn = db.begin().await?;
    delete_consent(&txn, user_id, client_id).await?;
    let families: std::collections::BTreeSet<String> = rt::Entity::find()
        .filter(rt::Column::UserId.eq(user_id))
        .filter(rt::Column::ClientId.eq(client_id))
        .filter(rt::Column::RevokedAt.is_null())
        .all(&txn)
        .await?
        .into_iter()
        .map(|r| r.family_id)
        .collect();
    for family in &families {
        revoke_family_in(&txn, family, now).await?;
    }
    let codes = code::Entity::find()
        .filter(code::Column::UserId.eq(user_id))
        .filter(code::Column::ClientId.eq(client_id))
        .all(&txn)
        .await?;
    for c in &codes {
        if let (Some(jti), Some(exp)) = (&c.access_jti, c.access_exp)
            && exp > now
        {
            revocations::revoke(&txn, jti, &c.client_id, exp, now).await?;
        }
    }
    super::audit::insert(&txn, event).await?;
    txn.commit().await?;
    Ok(())
}

/// Bulk insert (benchmarks, imports), in chunks.
pub async fn insert_codes(db: &impl ConnectionTrait, rows: Vec<CodeRow>) -> StoreResult<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<code::ActiveModel> = rows.by_ref().take(500).map(Into::into).collect();
        code::Entity::insert_many(chunk)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Redeems a code in one transaction: spends it (exactly one caller wins),
/// stores the refresh token if any, and records what was issued so that a
/// replay can revoke it. Returns `false` when the code was already spent.
pub async fn redeem_code<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    code_hash: [u8; 32],
    now: i64,
    refresh: Option<RefreshRow>,
    access_jti: &str,
    access_exp: i64,
) -> StoreResult<bool> {
    let txn = db.begin().await?;
    if !consume_code(&txn, code_hash, now).await? {
        txn.rollback().await?;
        return Ok(false);
    }
    let family = refresh.as_ref().map(|r| r.family_id.clone());
    if let Some(row) = refresh {
        insert_refresh(&txn, row).await?;
    }
    record_code_issuance(&txn, code_hash, family.as_deref(), access_jti, access_exp).await?;
    txn.commit().await?;
    Ok(true)
}

/// Deletes codes a day past expiry (kept that long so that a late replay is
/// still recognised and revokes its tokens), expired refresh tokens, and
/// expired sessions.
pub async fn purge(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    let codes = code::Entity::delete_many()
        .filter(code::Column::ExpiresAt.lt(now - 86_400))
        .exec(db)
        .await?;
    let refresh = rt::Entity::delete_many()
        .filter(rt::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    let sessions = entity::session::Entity::delete_many()
        .filter(entity::session::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    // Sealed retry responses outlive no grace window (at most 300 s).
    rt::Entity::update_many()
        .col_expr(
            rt::Column::RetrySealed,
            Expr::value(Option::<Vec<u8>>::None),
        )
        .filter(rt::Column::RotatedAt.lt(now - 300))
        .filter(rt::Column::RetrySealed.is_not_null())
        .exec(db)
        .await?;
    Ok(codes.rows_affected + refresh.rows_affected + sessions.rows_affected)
}

/// Everything a user granted stops: every refresh family of theirs is
/// revoked with the access tokens issued in it, and the access tokens of
/// their redeemed codes are revoked. With `forget`, their consents and
/// codes are deleted too (the user is going away). Run it inside the
/// transaction that changes the user.
pub async fn revoke_user_grants(
    db: &impl ConnectionTrait,
    user_id: &str,
    now: i64,
    forget: bool,
) -> StoreResult<()> {
    let families: Vec<String> = rt::Entity::find()
        .filter(rt::Column::UserId.eq(user_id))
        .filter(rt::Column::RevokedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.family_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for family in &families {
        revoke_family_in(db, family, now).await?;
    }
    let codes = code::Entity::find()
        .filter(code::Column::UserId.eq(user_id))
        .all(db)
        .await?;
    for c in &codes {
        if let (Some(jti), Some(exp)) = (&c.access_jti, c.access_exp)
            && exp > now
        {
            revocations::revoke(db, jti, &c.client_id, exp, now).await?;
        }
    }
    if forget {
        code::Entity::delete_many()
            .filter(code::Column::UserId.eq(user_id))
            .exec(db)
            .await?;
        consent::Entity::delete_many()
            .filter(consent::Column::UserId.eq(user_id))
            .exec(db)
            .await?;
    } else {
        // Codes not yet redeemed can no longer be.
        code::Entity::update_many()
            .col_expr(code::Column::ConsumedAt, Expr::value(now))
            .filter(code::Column::UserId.eq(user_id))
            .filter(code::Column::ConsumedAt.is_null())
            .exec(db)
            .await?;
    }
    Ok(())
}
