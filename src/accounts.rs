//! Human owner accounts: argon2id password hashing (RFC 9106 via the
//! RustCrypto `argon2` crate), run off the async executor.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::crypto::{random_bytes, random_id};
use crate::store::{self, Db, StoreError, users::User};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed")]
    Hash,
    #[error(transparent)]
    Random(#[from] crate::crypto::RandomError),
    #[error("username must be 1 to 64 characters without spaces or control characters")]
    Username,
    #[error("password must be at least 8 characters")]
    Password,
    #[error("a user with that name already exists")]
    Exists,
}

/// argon2id with the OWASP-recommended minimum (19 MiB, t=2, p=1).
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub async fn hash_password(password: String) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || {
        let salt =
            SaltString::encode_b64(&random_bytes::<16>()?).map_err(|_| AccountError::Hash)?;
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| AccountError::Hash)
    })
    .await
    .map_err(|_| AccountError::Hash)?
}

/// A PHC string for no real user, to spend the same time on unknown names.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$rXkrhT1Sqo1y4zaQ6DFoAxqYRIpcjXJYgVBaNzJLOZI";

/// The stored hash of an account that signs in by passkey only (the
/// store's own constant: the store depends on nothing above it).
pub use crate::store::users::NO_PASSWORD;

/// Verifies a password in constant time per hash; unknown users, and
/// accounts with no password (passkeys only), cost the same as known ones.
pub async fn verify_password(stored: Option<String>, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let stored = stored.filter(|s| s != NO_PASSWORD);
        let phc = stored.as_deref().unwrap_or(DUMMY_HASH);
        let ok = PasswordHash::new(phc)
            .is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok());
        ok && stored.is_some()
    })
    .await
    .unwrap_or(false)
}

fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub async fn create_user(
    db: &Db,
    username: &str,
    password: String,
    now: i64,
) -> Result<User, AccountError> {
    if !valid_username(username) {
        return Err(AccountError::Username);
    }
    if password.chars().count() < 8 {
        return Err(AccountError::Password);
    }
    let user = User {
        id: random_id()?,
        username: username.to_string(),
        password_hash: hash_password(password).await?,
        created_at: now,
        admin: false,
    };
    if !store::users::insert(db, user.clone()).await? {
        return Err(AccountError::Exists);
    }
    Ok(user)
}
