//! Database connections for services that own their data: SQLite (embedded default),
//! PostgreSQL or MariaDB/MySQL, chosen by URL, with migrations run before a service reports
//! SERVING.

use std::time::Duration;

use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;

use crate::server::Readiness;

/// Connections per service process: enough for its concurrency limit's database work without
/// exhausting a shared database server when many replicas run.
const MAX_CONNECTIONS: u32 = 16;

/// Opens a lazy pool: no connection is made until first use, so a server can start, answer
/// health checks with NOT_SERVING, and wait for a database that is still starting (as happens
/// when a whole cluster comes up at once).
pub async fn connect_lazy(url: &str) -> Result<DatabaseConnection, DbErr> {
    create_sqlite_folder(url)?;
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_lazy(true)
        .max_connections(MAX_CONNECTIONS)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        // WAL lets readers run beside the one writer; the busy timeout makes concurrent writers
        // wait for the lock instead of failing with SQLITE_BUSY.
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
                .create_if_missing(true)
        });
    Database::connect(options).await
}

/// Runs migrations (retrying with backoff until the database answers), then keeps the health
/// status in step with the database: SERVING while it answers pings, NOT_SERVING otherwise.
pub fn spawn_readiness<M: MigratorTrait>(
    db: DatabaseConnection,
    readiness: Readiness,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match M::up(&db, None).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "migrations failed; database not ready");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("migrations applied");
        readiness.set_serving(true);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let answered = db.ping().await;
            record_pool_metrics(&db);
            if let Err(error) = &answered {
                tracing::warn!(%error, "database ping failed");
            }
            readiness.set_serving(answered.is_ok());
        }
    })
}

/// SQLite creates a missing file but not its folder; create the folder of a file URL.
fn create_sqlite_folder(url: &str) -> Result<(), DbErr> {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Ok(());
    };
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return Ok(());
    }
    match std::path::Path::new(path).parent() {
        Some(folder) if !folder.as_os_str().is_empty() => std::fs::create_dir_all(folder)
            .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", folder.display()))),
        _ => Ok(()),
    }
}

/// The current time at the precision every supported database keeps (microseconds), so that
/// a value read back equals the value written, whichever engine stores it.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// A timestamp column for migrations, with microsecond precision on every engine.
/// MySQL/MariaDB get `DATETIME(6)` (sqlx reads it as UTC): their `TIMESTAMP` keeps whole
/// seconds by default, ends in 2038, and may update itself on every row change.
/// Chain `.not_null()` or `.null()`.
pub fn timestamp_column(
    backend: sea_orm::DbBackend,
    name: impl sea_orm_migration::sea_query::IntoIden,
) -> sea_orm_migration::sea_query::ColumnDef {
    use sea_orm_migration::sea_query::{Alias, ColumnDef};
    let mut column = ColumnDef::new(name);
    match backend {
        sea_orm::DbBackend::MySql => column.custom(Alias::new("DATETIME(6)")),
        _ => column.timestamp_with_time_zone(),
    };
    column
}

/// Exports the pool's connections in use and idle (`bookmesh_db_pool_connections`).
pub fn record_pool_metrics(db: &DatabaseConnection) {
    // The getters below panic for another backend, so they are only called for the right one.
    let (size, idle) = match db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        sea_orm::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        sea_orm::DbBackend::MySql => {
            let pool = db.get_mysql_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => return,
    };
    let gauge = &crate::metrics::DB_POOL;
    gauge
        .with_label_values(&["used"])
        .set(i64::from(size) - idle as i64);
    gauge.with_label_values(&["idle"]).set(idle as i64);
    gauge
        .with_label_values(&["max"])
        .set(i64::from(MAX_CONNECTIONS));
}
