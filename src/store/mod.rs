//! Storage: the only code that imports sea_orm. Every function takes
//! `&impl ConnectionTrait`, so it runs inside or outside a transaction, and
//! every single-use or rotating record changes with one atomic statement.

pub mod agents;
pub mod audit;
pub mod backchannel;
pub mod bridge;
pub mod clients;
pub mod delegations;
pub mod events;
pub mod grants;
pub mod initial_tokens;
pub mod keys;
pub mod login_requests;
pub mod passkeys;
pub mod replay;
pub mod revocations;
pub mod status;
pub mod traces;
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
    if url.starts_with("sqlite:") {
        let db = connect_sqlite(url, max_connections).await?;
        Migrator::up(&db, None).await?;
        return Ok(db);
    }
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
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// SQLite through a pool of our own, for one guard sea-orm's options do
/// not reach: a connection goes back to the pool only when sqlx counts
/// no transaction open on it; otherwise it is closed.
///
/// Found by the full-disk test: when a statement fails with SQLITE_FULL,
/// SQLite may roll the whole transaction back by itself, the ROLLBACK
/// that follows then fails, and sqlx keeps counting the transaction as
/// open. The connection's next transaction became a SAVEPOINT inside a
/// transaction that was never committed: writes answered 201 were lost.
async fn connect_sqlite(url: &str, max_connections: u32) -> StoreResult<DatabaseConnection> {
    use sea_orm::sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    use std::str::FromStr as _;

    let sqlx_err =
        |e: sea_orm::sqlx::Error| StoreError(DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)));
    let options = SqliteConnectOptions::from_str(url)
        .map_err(sqlx_err)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .after_release(|conn, _| Box::pin(std::future::ready(Ok(no_open_transaction(conn)))))
        .connect_with(options)
        .await
        .map_err(sqlx_err)?;
    Ok(sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// True when sqlx counts no transaction open on `conn`. (No need to ask
/// SQLite too: a ROLLBACK that succeeds leaves both at zero, and the
/// failure above is sqlx counting one SQLite no longer has.)
fn no_open_transaction(conn: &sea_orm::sqlx::SqliteConnection) -> bool {
    use sea_orm::sqlx::{Sqlite, TransactionManager as _};
    <Sqlite as sea_orm::sqlx::Database>::TransactionManager::get_transaction_depth(conn) == 0
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
        + backchannel::purge(db, now).await?
        + bridge::purge(db, now).await?
        + passkeys::purge(db, now).await?
        + delegations::purge(db, now).await?
        + status::purge(db, now).await?
        + events::purge(db, now).await?)
}
