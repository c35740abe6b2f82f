//! The one contention check (`bookmesh::db::is_contention`) recognises a real deadlock on the
//! engine under test (`BOOKMESH_TEST_DB`): PostgreSQL's deadlock_detected, MariaDB's
//! ER_LOCK_DEADLOCK, SQLite's busy writer. Retry loops (the rental store, the consumers, the
//! relay) rely on it to retry instead of failing or dead-lettering.

use std::time::Duration;

use bookmesh::testing::{Engine, TestDatabase};
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, TransactionTrait};

async fn pool(db: &TestDatabase) -> DatabaseConnection {
    let mut options = ConnectOptions::new(db.url.clone());
    options.max_connections(4);
    // SQLite: no busy timeout, so the second writer is refused at once rather than in 5 s.
    options.map_sqlx_sqlite_opts(|opts| {
        opts.journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::ZERO)
            .create_if_missing(true)
    });
    Database::connect(options).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transactions_locking_rows_in_opposite_order_are_contention_not_failure() {
    let database = TestDatabase::fresh().await;
    let db = pool(&database).await;
    db.execute_unprepared("CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        .await
        .expect("create");
    db.execute_unprepared("INSERT INTO counters (id, n) VALUES (1, 0), (2, 0)")
        .await
        .expect("insert");
    let bump = |id: i32| format!("UPDATE counters SET n = n + 1 WHERE id = {id}");

    let first = db.begin().await.expect("begin");
    let second = db.begin().await.expect("begin");
    first
        .execute_unprepared(&bump(1))
        .await
        .expect("first locks row 1");
    let refused = match second.execute_unprepared(&bump(2)).await {
        // SQLite has one writer: the second transaction is refused on its first write.
        Err(error) => error,
        Ok(_) => {
            // Row locks (PostgreSQL, MariaDB): each now waits for the other's row. The engine
            // breaks the deadlock by failing one of them.
            let crossing = tokio::spawn(async move {
                let result = first.execute_unprepared(&bump(2)).await;
                (first, result)
            });
            let second_result = second.execute_unprepared(&bump(1)).await;
            let failed = match second_result {
                Err(error) => {
                    drop(second);
                    let (first, first_result) = crossing.await.expect("first transaction");
                    first_result.expect("the survivor goes on");
                    first.commit().await.expect("commit");
                    error
                }
                Ok(_) => {
                    let (_first, first_result) = crossing.await.expect("first transaction");
                    second.commit().await.expect("commit");
                    first_result.expect_err("one side of the deadlock fails")
                }
            };
            assert_ne!(database.engine, Engine::Sqlite);
            failed
        }
    };
    assert!(
        bookmesh::db::is_contention(&refused),
        "{:?} on {:?} is contention",
        refused,
        database.engine
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_that_runs_out_is_contention_not_failure() {
    let database = TestDatabase::fresh().await;
    if database.engine == Engine::Sqlite {
        // One writer: the busy writer above is the only wait SQLite has.
        return;
    }
    let db = pool(&database).await;
    db.execute_unprepared("CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        .await
        .expect("create");
    db.execute_unprepared("INSERT INTO counters (id, n) VALUES (1, 0)")
        .await
        .expect("insert");
    let holder = db.begin().await.expect("begin");
    holder
        .execute_unprepared("UPDATE counters SET n = n + 1 WHERE id = 1")
        .await
        .expect("holder locks the row");
    let waiter = db.begin().await.expect("begin");
    let short_wait = match database.engine {
        Engine::Postgres => "SET LOCAL lock_timeout = '200ms'",
        _ => "SET SESSION innodb_lock_wait_timeout = 1",
    };
    waiter
        .execute_unprepared(short_wait)
        .await
        .expect("set timeout");
    let refused = waiter
        .execute_unprepared("UPDATE counters SET n = n + 1 WHERE id = 1")
        .await
        .expect_err("the lock is held for longer than the waiter waits");
    assert!(
        bookmesh::db::is_contention(&refused),
        "{refused:?} on {:?} is contention",
        database.engine
    );
    if database.engine == Engine::Postgres {
        let statement = db.begin().await.expect("begin");
        statement
            .execute_unprepared("SET LOCAL statement_timeout = '100ms'")
            .await
            .expect("set timeout");
        let refused = statement
            .execute_unprepared("SELECT pg_sleep(2)")
            .await
            .expect_err("the statement runs longer than allowed");
        assert!(bookmesh::db::is_contention(&refused), "{refused:?}");
    }
    holder.rollback().await.expect("rollback");
}
