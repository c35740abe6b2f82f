//! Database connections for services that own their data: SQLite (embedded default),
//! PostgreSQL or MariaDB/MySQL, chosen by URL, with migrations run before a service reports
//! SERVING.

use std::time::Duration;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::readiness::Readiness;

/// Connections per service process on a database server: enough for its concurrency limit's
/// database work without exhausting a server that many replicas share.
const MAX_CONNECTIONS: u32 = 16;

/// Connections per service process on SQLite. Each one is a thread of its own (sqlx hands every
/// statement to it over a channel), and SQLite's work per statement is a few microseconds of
/// CPU: past a handful, more connections only add context switches (a profile under GetBook
/// load showed a third of the CPU in futex wake-ups with 16). Writers take turns anyway
/// ([`begin_write`]), so this is a small read pool plus the one writer.
const SQLITE_MAX_CONNECTIONS: u32 = 4;

/// How long a pooled connection to a database server may sit idle before it is pinged when
/// handed out again (see connect_lazy).
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// The pool size for `url`'s engine; `BOOKMESH_DB_MAX_CONNECTIONS` overrides it (benchmarks
/// compare sizes with it).
fn max_connections(url: &str) -> u32 {
    if let Some(size) = std::env::var("BOOKMESH_DB_MAX_CONNECTIONS")
        .ok()
        .and_then(|size| size.parse::<u32>().ok())
        .filter(|size| *size > 0)
    {
        return size;
    }
    if url.starts_with("sqlite:") {
        SQLITE_MAX_CONNECTIONS
    } else {
        MAX_CONNECTIONS
    }
}

/// Opens a lazy pool: no connection is made until first use, so a server can start, answer
/// health checks with NOT_SERVING, and wait for a database that is still starting (as happens
/// when a whole cluster comes up at once).
pub async fn connect_lazy(url: &str) -> Result<DatabaseConnection, DbErr> {
    create_sqlite_folder(url)?;
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_lazy(true)
        .max_connections(max_connections(url))
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    // sqlx pings a pooled connection every time it hands one out: a round trip before every
    // statement run outside a transaction (on SQLite a hand-off to the connection's thread and
    // back, on PostgreSQL and MariaDB one to the server). A connection that answered a moment
    // ago needs no test, so only one idle for longer than PING_WHEN_IDLE_FOR is pinged, which
    // catches what a server restart, a proxy or a firewall dropped while it sat idle
    // (HikariCP's `aliveBypassWindowMs` is the same idea). A SQLite connection is a file opened
    // by this process: nothing can drop it, so it is never pinged.
    if url.starts_with("sqlite:") {
        options.test_before_acquire(false);
    } else {
        options.test_before_acquire_if_idle_for(PING_WHEN_IDLE_FOR);
    }
    options
        // WAL lets readers run beside the one writer; the busy timeout makes a writer of another
        // process wait for the lock instead of failing with SQLITE_BUSY (writers of this process
        // take turns in begin_write).
        //
        // synchronous=NORMAL under WAL: a commit appends to the WAL without waiting for the disk,
        // which is synced at each checkpoint instead. What it risks is exactly this: on a power
        // loss or an operating-system crash, the last transactions committed before it may be
        // rolled back (the database stays consistent, never corrupt). A crash of the process
        // loses nothing: what is in the WAL is in the kernel's page cache. FULL (sync on every
        // commit) capped the event pipeline at about 30 transactions/s (docs/performance.md).
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .create_if_missing(true)
        });
    // Replicas opening one new SQLite file at the same moment race to switch it to WAL, which
    // takes an exclusive lock the busy timeout does not cover: "database is locked". The
    // switch happens once per file, so a short retry is enough.
    let mut attempt = 0;
    loop {
        match Database::connect(options.clone()).await {
            Err(error) if attempt < 10 && error.to_string().contains("database is locked") => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            connected => return connected,
        }
    }
}

/// Starts a transaction that will write. On SQLite it first waits for this process's turn to
/// write to that database file, then takes the write lock at BEGIN (`BEGIN IMMEDIATE`).
///
/// Why: SQLite has one writer. A default (deferred) transaction that read first and then writes
/// cannot wait for a writer that committed in between: its snapshot is stale, so it fails at
/// once with SQLITE_BUSY_SNAPSHOT, whatever the busy timeout. Under load that turned into
/// retries and spurious ABORTED answers although no two calls touched the same row. Taking the
/// lock up front makes the transaction wait instead, and taking turns inside the process makes
/// it wait on a queue rather than in SQLite's busy handler, which polls with sleeps of up to
/// 100 ms. On PostgreSQL and MySQL/MariaDB this is a plain `BEGIN`: their row locks and
/// optimistic versions already let concurrent writers run.
///
/// Keep the returned turn until the transaction is committed or dropped. `writer` says who
/// writes, for the writer-turn metrics (`bookmesh_db_write_turn_*_seconds`).
pub async fn begin_write(
    db: &DatabaseConnection,
    writer: Writer,
) -> Result<(DatabaseTransaction, WriterTurn), DbErr> {
    if db.get_database_backend() != sea_orm::DbBackend::Sqlite {
        return Ok((db.begin().await?, WriterTurn(None)));
    }
    let file = db
        .get_sqlite_connection_pool()
        .connect_options()
        .get_filename()
        .to_path_buf();
    let turn = match sqlite_writer(file) {
        Some(turns) => {
            let waiting = std::time::Instant::now();
            let guard = turns.lock_owned().await;
            crate::metrics::DB_WRITE_TURN_WAIT
                .with_label_values(&[writer.label()])
                .observe(waiting.elapsed().as_secs_f64());
            Some(HeldTurn {
                _guard: guard,
                writer,
                since: std::time::Instant::now(),
            })
        }
        None => None,
    };
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?;
    Ok((txn, WriterTurn(turn)))
}

/// A writer's turn on a SQLite database ([`begin_write`]); the next writer goes when it drops.
#[must_use = "the turn ends when this is dropped: keep it until the transaction ends"]
pub struct WriterTurn(#[allow(dead_code)] Option<HeldTurn>);

/// Who takes a writer turn ([`begin_write`]): the `writer` label of the writer-turn metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A call's own transaction (RentBook, ReturnBook…).
    Call,
    /// An event consumer applying events, or dead-lettering one.
    Consumer,
    /// The outbox relay giving committed events their feed positions.
    Relay,
}

impl Writer {
    fn label(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Consumer => "consumer",
            Self::Relay => "relay",
        }
    }
}

/// The lock of a turn, who holds it, and since when (`bookmesh_db_write_turn_held_seconds`).
struct HeldTurn {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    writer: Writer,
    since: std::time::Instant,
}

impl Drop for HeldTurn {
    fn drop(&mut self) {
        crate::metrics::DB_WRITE_TURN_HELD
            .with_label_values(&[self.writer.label()])
            .observe(self.since.elapsed().as_secs_f64());
    }
}

/// The queue of this process's writers to one SQLite file (none for an in-memory database,
/// which is private to its connection). One entry per file a process opens: a handful.
fn sqlite_writer(file: PathBuf) -> Option<Arc<tokio::sync::Mutex<()>>> {
    if file.as_os_str().is_empty() || file.as_os_str() == ":memory:" {
        return None;
    }
    static WRITERS: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        OnceLock::new();
    let mut writers = WRITERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Some(writers.entry(file).or_default().clone())
}

/// Applies `M`'s pending migrations while holding a lock on the database, so replicas that
/// start together take turns: the first applies them, the others find nothing left to do.
/// Without it they race on the same DDL and all but one fail ("relation already exists",
/// duplicate `seaql_migrations` rows) and must retry.
///
/// The lock is a session lock on one pooled connection (PostgreSQL advisory lock, MySQL/MariaDB
/// named lock), so a replica that dies mid-migration releases it with its connection. A SQLite
/// file belongs to one process: there, a process-wide mutex is enough.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), DbErr> {
    use sea_orm::sqlx;
    let sqlx_error = |e: sqlx::Error| DbErr::Custom(format!("migration lock: {e}"));
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            let mut lock = db
                .get_postgres_connection_pool()
                .acquire()
                .await
                .map_err(sqlx_error)?;
            // Advisory locks live in the current database: one key serves every service.
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .execute(&mut *lock)
                .await
                .map_err(sqlx_error)?;
            let migrated = M::up(db, None).await;
            let released = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .execute(&mut *lock)
                .await;
            if released.is_err() {
                // The lock goes with the session: drop the connection rather than reuse it.
                lock.detach();
            }
            migrated
        }
        sea_orm::DbBackend::MySql => {
            let mut lock = db
                .get_mysql_connection_pool()
                .acquire()
                .await
                .map_err(sqlx_error)?;
            // Named locks are server-wide: name it after the database.
            let acquired: Option<i64> = sqlx::query_scalar(
                "SELECT GET_LOCK(CONCAT('bookmesh_migrations.', DATABASE()), ?)",
            )
            .bind(MIGRATION_LOCK_WAIT_SECONDS)
            .fetch_one(&mut *lock)
            .await
            .map_err(sqlx_error)?;
            if acquired != Some(1) {
                return Err(DbErr::Custom(
                    "migration lock: another replica has been migrating for too long".into(),
                ));
            }
            let migrated = M::up(db, None).await;
            let released =
                sqlx::query("SELECT RELEASE_LOCK(CONCAT('bookmesh_migrations.', DATABASE()))")
                    .execute(&mut *lock)
                    .await;
            if released.is_err() {
                lock.detach();
            }
            migrated
        }
        _ => {
            // SQLite: one process owns each database file; pools inside it take turns.
            static SQLITE_MIGRATIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
            let _turn = SQLITE_MIGRATIONS.lock().await;
            M::up(db, None).await
        }
    }
}

/// The PostgreSQL advisory-lock key of migrations (any constant; "bookmesh" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x626f_6f6b_6d65_7368;

/// How long a MySQL/MariaDB replica waits for another's migrations before retrying.
const MIGRATION_LOCK_WAIT_SECONDS: i64 = 60;

/// Runs migrations (retrying with backoff until the database answers), then keeps the health
/// status in step with the database: SERVING while it answers pings, NOT_SERVING otherwise.
pub(crate) fn spawn_readiness<M: MigratorTrait>(
    db: DatabaseConnection,
    readiness: Readiness,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match migrate::<M>(&db).await {
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
            // An injected outage fails the check as a real one would (docs/faults.md).
            let outage = || Err(DbErr::Custom("fault injected: database outage".to_owned()));
            let answered = if crate::faults::database_outage() {
                outage()
            } else {
                let pinged = db.ping().await;
                // The fault may have been switched on while the ping was out, and the admin
                // port then set NOT_SERVING at once: a ping that left before must not undo it.
                if pinged.is_ok() && crate::faults::database_outage() {
                    outage()
                } else {
                    pinged
                }
            };
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
pub(crate) fn record_pool_metrics(db: &DatabaseConnection) {
    // The getters below panic for another backend, so they are only called for the right one.
    let (size, idle, max) = match db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            )
        }
        sea_orm::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            )
        }
        sea_orm::DbBackend::MySql => {
            let pool = db.get_mysql_connection_pool();
            (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            )
        }
        _ => return,
    };
    let gauge = &crate::metrics::DB_POOL;
    gauge
        .with_label_values(&["used"])
        .set(i64::from(size) - idle as i64);
    gauge.with_label_values(&["idle"]).set(idle as i64);
    gauge.with_label_values(&["max"]).set(i64::from(max));
}

/// Whether `error` means "another transaction holds the lock or got there first": SQLite's busy
/// or locked writer, a serialization failure or deadlock on PostgreSQL and MySQL/MariaDB
/// (SQLSTATE class 40), or a lock wait or statement that ran out of time. Retrying the whole transaction on fresh data is the cure; nothing is
/// wrong with the request. The one place that decides it, by the driver's error code rather
/// than its message text (which differs between versions and locales).
pub fn is_contention(error: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx};
    let (DbErr::Exec(RuntimeErr::SqlxError(source))
    | DbErr::Query(RuntimeErr::SqlxError(source))
    | DbErr::Conn(RuntimeErr::SqlxError(source))) = error
    else {
        return false;
    };
    let sqlx::Error::Database(database) = &**source else {
        return false;
    };
    let Some(code) = database.code() else {
        return false;
    };
    if database
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // Extended result codes carry the primary code in their low byte: SQLITE_BUSY (5) and
        // SQLITE_LOCKED (6), with variants such as SQLITE_BUSY_SNAPSHOT (517).
        return code
            .parse::<i32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6));
    }
    if let Some(mysql) = database.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // Waits that ran out share the generic SQLSTATE HY000; their numbers tell them apart:
        // ER_LOCK_WAIT_TIMEOUT (innodb_lock_wait_timeout), MySQL's ER_QUERY_TIMEOUT
        // (max_execution_time) and MariaDB's ER_STATEMENT_TIMEOUT (max_statement_time).
        if matches!(mysql.number(), 1205 | 3024 | 1969) {
            return true;
        }
    }
    // 40001 serialization_failure (PostgreSQL; MySQL's ER_LOCK_DEADLOCK 1213 too), 40P01
    // deadlock_detected, 55P03 lock_not_available (lock_timeout) and 57014 query_canceled
    // (statement_timeout), all PostgreSQL: another transaction held what this one needed for
    // longer than it would wait, which a retry on fresh data cures like a deadlock.
    matches!(&*code, "40001" | "40P01" | "55P03" | "57014")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, TransactionTrait};

    #[tokio::test]
    async fn a_locked_sqlite_writer_is_contention_and_other_errors_are_not() {
        let dir = std::env::temp_dir().join(format!("bookmesh-db-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url = format!("sqlite://{}/contention.db?mode=rwc", dir.display());
        let mut options = ConnectOptions::new(url);
        options.max_connections(2);
        // No busy timeout: the second writer fails at once instead of waiting.
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::ZERO)
        });
        let db = Database::connect(options).await.expect("sqlite");
        db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
            .await
            .expect("create");
        db.execute_unprepared("INSERT INTO t VALUES (1, 0)")
            .await
            .expect("insert");
        let holder = db.begin().await.expect("begin");
        holder
            .execute_unprepared("UPDATE t SET n = n + 1")
            .await
            .expect("first writer");
        let locked = db
            .execute_unprepared("UPDATE t SET n = n + 1")
            .await
            .expect_err("the second writer is refused while the first holds the lock");
        assert!(is_contention(&locked), "{locked:?}");
        holder.commit().await.expect("commit");

        let not_contention = db
            .execute_unprepared("INSERT INTO t VALUES (1, 0)")
            .await
            .expect_err("duplicate key");
        assert!(!is_contention(&not_contention), "{not_contention:?}");
        assert!(!is_contention(&DbErr::Custom("database is locked".into())));
        let _ = std::fs::remove_dir_all(dir);
    }
}
