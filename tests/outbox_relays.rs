//! Two relays on one database (two replicas of a producer) publish its outbox without gaps or
//! duplicates: `events.proto` promises consumers consecutive sequence numbers. Run on the
//! engine under test (`BOOKMESH_TEST_DB`): SQLite by default, PostgreSQL and MariaDB with
//! `make test-db`, where relays race for real.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bookmesh::events::NewEvent;
use bookmesh::events::outbox::{Relay, append};
use bookmesh::testing::{TestDatabase, eventually};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use sea_orm_migration::MigratorTrait;

struct EventTables;

impl MigratorTrait for EventTables {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![
            Box::new(bookmesh::events::tables::CreateEventTables),
            Box::new(bookmesh::events::tables::IndexEventTables),
        ]
    }
}

const WRITERS: usize = 4;
const COMMITS_PER_WRITER: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_consecutive_sequences() {
    let database = TestDatabase::fresh().await;
    let first = bookmesh::db::connect_lazy(&database.url)
        .await
        .expect("connect");
    EventTables::up(&first, None).await.expect("migrate");
    let second = bookmesh::db::connect_lazy(&database.url)
        .await
        .expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let relays: Vec<_> = [first.clone(), second]
        .into_iter()
        .map(|db| {
            let relay = Relay::new("test", db);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut published = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Contention between the relays is expected: the loser retries.
                    match relay.publish_pending().await {
                        Ok(0) | Err(_) => tokio::task::yield_now().await,
                        Ok(n) => published += n,
                    }
                }
                published
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let db = first.clone();
            tokio::spawn(async move {
                for i in 0..COMMITS_PER_WRITER {
                    let events: Vec<NewEvent> = (0..=i % 3)
                        .map(|n| NewEvent {
                            event_type: "test.Event".into(),
                            aggregate_id: format!("{writer}-{i}-{n}"),
                            payload: vec![1],
                        })
                        .collect();
                    loop {
                        match append(&db, events.clone()).await {
                            Ok(()) => break,
                            Err(error) if bookmesh::db::is_contention(&error) => {}
                            Err(error) => panic!("append: {error}"),
                        }
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    eventually("every row published", Duration::from_secs(60), || {
        let db = first.clone();
        async move {
            let pending = sequences(&db, "feed_sequence IS NULL").await.len();
            (pending == 0).then_some(())
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut per_relay = Vec::new();
    for relay in relays {
        per_relay.push(relay.await.expect("relay"));
    }
    let sequences: Vec<i64> = sequences(&first, "feed_sequence IS NOT NULL")
        .await
        .into_iter()
        .flatten()
        .collect();
    println!(
        "{} rows on {:?}: relays published {per_relay:?}",
        sequences.len(),
        database.engine
    );
    let expected: Vec<i64> = (1..=sequences.len() as i64).collect();
    assert_eq!(sequences, expected, "consecutive from 1, each once");
    assert_eq!(
        per_relay.iter().sum::<usize>(),
        sequences.len(),
        "each row counted as published by one relay only"
    );
}

/// The feed positions of the outbox rows matching `condition`, in order (the outbox's table is
/// the producer's own; read here as a tool would).
async fn sequences(db: &DatabaseConnection, condition: &str) -> Vec<Option<i64>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            format!(
                "SELECT feed_sequence FROM outbox_events WHERE {condition} ORDER BY feed_sequence"
            ),
        ))
        .await
        .expect("query");
    rows.iter()
        .map(|row| {
            row.try_get::<Option<i64>>("", "feed_sequence")
                .expect("column")
        })
        .collect()
}
