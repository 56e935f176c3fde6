//! Initial access tokens for protected registration (RFC 7591 §3).

use entity::initial_access_token as iat;
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use super::StoreResult;

pub async fn insert(
    db: &impl ConnectionTrait,
    token_hash: [u8; 32],
    now: i64,
    expires_at: Option<i64>,
    uses: Option<i32>,
    owner_id: Option<String>,
) -> StoreResult<()> {
    let row = iat::ActiveModel {
        token_hash: Set(token_hash.to_vec()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        uses_remaining: Set(uses),
        owner_id: Set(owner_id),
    };
    iat::Entity::insert(row).exec_without_returning(db).await?;
    Ok(())
}

/// The owner an initial access token names, if the token exists (whether
/// or not it is still usable: [`consume`] decides that).
pub async fn owner_of(
    db: &impl ConnectionTrait,
    token_hash: [u8; 32],
) -> StoreResult<Option<String>> {
    Ok(iat::Entity::find_by_id(token_hash.to_vec())
        .one(db)
        .await?
        .and_then(|row| row.owner_id))
}

/// Spends one use of the token: one conditional `UPDATE`, so concurrent
/// registrations cannot spend the same last use twice.
pub async fn consume(
    db: &impl ConnectionTrait,
    token_hash: [u8; 32],
    now: i64,
) -> StoreResult<bool> {
    let result = iat::Entity::update_many()
        .col_expr(
            iat::Column::UsesRemaining,
            Expr::col(iat::Column::UsesRemaining).sub(1),
        )
        .filter(iat::Column::TokenHash.eq(token_hash.to_vec()))
        .filter(
            Condition::any()
                .add(iat::Column::ExpiresAt.is_null())
                .add(iat::Column::ExpiresAt.gt(now)),
        )
        .filter(
            Condition::any()
                .add(iat::Column::UsesRemaining.is_null())
                .add(iat::Column::UsesRemaining.gt(0)),
        )
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}
