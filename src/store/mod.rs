//! Storage: the only code that imports sea_orm. Every function takes
//! `&impl ConnectionTrait`, so it runs inside or outside a transaction, and
//! every single-use or rotating record changes with one atomic statement.

pub mod agents;
pub mod audit;
pub mod bridge;
pub mod clients;
pub mod delegations;
pub mod grants;
pub mod initial_tokens;
pub mod keys;
pub mod login_requests;
pub mod passkeys;
pub mod replay;
pub mod revocations;
pub mod users;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

pub use sea_orm::DatabaseConnection as Db;

/// A storage failure. Mapped once to 503 with `Retry-After`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(#[from] pub DbErr);

impl StoreError {
    /// A failure of a store component other than the database itself
    /// (a batching task that stopped, say).
    pub fn unavailable(why: impl Into<String>) -> Self {
        Self(DbErr::Custom(why.into()))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Connects and applies pending migrations.
///
/// SQLite runs in WAL mode with `synchronous=NORMAL` (durable across
/// process crashes; the last transactions may be lost only on power loss)
/// and a busy timeout so that writers queue instead of failing.
pub async fn connect(
    url: &str,
    max_connections: u32,
    schema: Option<&str>,
) -> StoreResult<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if let Some(schema) = schema {
        options.set_schema_search_path(schema.to_string());
    }
    if url.starts_with("sqlite:") {
        options.map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    }
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// True when the database is shared by many nodes (PostgreSQL), so
/// cluster-wide state must live there rather than in a node's memory.
pub fn is_shared(db: &impl ConnectionTrait) -> bool {
    db.get_database_backend() == sea_orm::DbBackend::Postgres
}

/// PostgreSQL `NOTIFY channel, payload` (delivered at commit; here, at
/// once: the caller is not in a transaction).
pub async fn notify(db: &impl ConnectionTrait, channel: &str, payload: &str) -> StoreResult<()> {
    db.execute(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [channel.into(), payload.into()],
    ))
    .await?;
    Ok(())
}

/// `/readyz`: the database answers a trivial query.
pub async fn ping(db: &impl ConnectionTrait) -> StoreResult<()> {
    db.execute_unprepared("SELECT 1").await?;
    Ok(())
}

/// Deletes expired rows from the replay and revocation tables.
pub async fn purge_expired(db: &impl ConnectionTrait, now: i64) -> StoreResult<u64> {
    Ok(replay::purge(db, now).await?
        + revocations::purge(db, now).await?
        + grants::purge(db, now).await?
        + login_requests::purge(db, now).await?
        + bridge::purge(db, now).await?
        + passkeys::purge(db, now).await?
        + delegations::purge(db, now).await?)
}
