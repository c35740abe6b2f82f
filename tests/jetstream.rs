//! JetStream-specific guarantees, against the real nats-server (run by `make test-nats`, which
//! passes `--ignored`; `make test` needs no broker).

use std::sync::Arc;
use std::time::Duration;

use bookmesh::events::NewEvent;
use bookmesh::events::consumer::{ConsumerConfig, Processor};
use bookmesh::events::nats::{NatsSettings, run_consumer, run_publisher};
use bookmesh::events::outbox::{Relay, append};
use bookmesh::readiness::Readiness;
use bookmesh::testing::{CountingHandler, event_tables_database};
use futures::StreamExt;
use sea_orm::DatabaseConnection;

/// A producer in a fresh folder with `count` events appended and relayed (numbered for
/// publishing), and stream names of its own on the test NATS server.
async fn producer_with_events(
    count: u8,
) -> (std::path::PathBuf, NatsSettings, DatabaseConnection, Relay) {
    let dir = std::env::temp_dir().join(format!("bookmesh-js-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let settings = NatsSettings {
        ca: None,
        url: std::env::var("BOOKMESH_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        prefix: format!("t{}", uuid::Uuid::now_v7().simple()),
        replica: None,
        limits: bookmesh::events::nats::StreamLimits::default(),
    };
    let producer_db = event_tables_database(&dir, "producer").await;
    let relay = Relay::new("test", producer_db.clone());
    let events: Vec<NewEvent> = (0..count)
        .map(|i| NewEvent {
            event_type: "test.Event".into(),
            aggregate_id: format!("a{i}"),
            payload: vec![i],
        })
        .collect();
    append(&producer_db, events).await.expect("append");
    assert_eq!(relay.publish_pending().await, Ok(usize::from(count)));
    (dir, settings, producer_db, relay)
}

async fn publish_until(
    db: &DatabaseConnection,
    settings: &NatsSettings,
    relay: &Relay,
    position: i64,
) {
    let readiness = Readiness::new();
    readiness.set_serving(true);
    let task = tokio::spawn(run_publisher(
        db.clone(),
        "test",
        settings.clone(),
        relay.published(),
        readiness,
    ));
    bookmesh::testing::eventually("published", Duration::from_secs(20), || async {
        let at = bookmesh::events::consumer::cursor_position(db, "jetstream:test")
            .await
            .ok()?;
        (at >= position).then_some(())
    })
    .await;
    task.abort();
}

#[tokio::test]
#[ignore = "needs nats-server with JetStream: make test-nats"]
async fn a_publisher_crash_between_publish_and_mark_duplicates_nothing() {
    let (dir, settings, producer_db, relay) = producer_with_events(5).await;

    publish_until(&producer_db, &settings, &relay, 5).await;
    // The crash: everything went to JetStream, but the cursor update was lost.
    use sea_orm::ConnectionTrait;
    producer_db
        .execute_unprepared(
            "UPDATE consumer_cursors SET position = 0 WHERE subscription = 'jetstream:test'",
        )
        .await
        .expect("lose the cursor");
    publish_until(&producer_db, &settings, &relay, 5).await;

    // JetStream kept one copy of each (deduplicated by event id)...
    let js = async_nats::jetstream::new(
        async_nats::connect(settings.url.as_str())
            .await
            .expect("nats"),
    );
    let mut stream = js
        .get_stream(settings.stream_name("test"))
        .await
        .expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 5);

    // ...and a consumer applies each exactly once.
    let consumer_db = event_tables_database(&dir, "consumer").await;
    let handler = Arc::new(CountingHandler::default());
    let processor = Arc::new(Processor::new(
        consumer_db.clone(),
        ConsumerConfig::new("checker", "test"),
        handler.clone(),
    ));
    let readiness = Readiness::new();
    readiness.set_serving(true);
    let consumer = tokio::spawn(run_consumer(
        processor.clone(),
        settings.clone(),
        "checker".into(),
        "test".into(),
        readiness,
    ));
    bookmesh::testing::eventually("consumed", Duration::from_secs(20), || async {
        (processor.position().await.ok()? == 5).then_some(())
    })
    .await;
    consumer.abort();
    assert_eq!(handler.count(), 5);
    js.delete_stream(settings.stream_name("test"))
        .await
        .expect("clean up");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
#[ignore = "needs nats-server with JetStream: make test-nats"]
async fn replicas_with_their_own_consumers_each_apply_every_event() {
    // The best-seller read model lives in each pod: every replica must see every event, which
    // a shared (competing) durable consumer would split between them.
    let (dir, shared, producer_db, relay) = producer_with_events(6).await;
    publish_until(&producer_db, &shared, &relay, 6).await;

    let mut replicas = Vec::new();
    for pod in ["bestbook-7d9f-a.x", "bestbook-7d9f-b"] {
        let settings = NatsSettings {
            ca: None,
            replica: Some(pod.into()),
            ..shared.clone()
        };
        let handler = Arc::new(CountingHandler::default());
        let processor = Arc::new(Processor::new(
            event_tables_database(&dir, pod).await,
            ConsumerConfig::new("ranking", "test"),
            handler.clone(),
        ));
        let readiness = Readiness::new();
        readiness.set_serving(true);
        let task = tokio::spawn(run_consumer(
            processor.clone(),
            settings.clone(),
            "ranking".into(),
            "test".into(),
            readiness,
        ));
        replicas.push((settings, handler, processor, task));
    }
    for (settings, handler, processor, _) in &replicas {
        let replica = settings.replica.clone().unwrap_or_default();
        bookmesh::testing::eventually(&replica, Duration::from_secs(20), || async {
            (processor.position().await.ok()? == 6).then_some(())
        })
        .await;
        assert_eq!(handler.count(), 6, "{replica}");
    }

    let js = async_nats::jetstream::new(
        async_nats::connect(shared.url.as_str())
            .await
            .expect("nats"),
    );
    let stream = js
        .get_stream(shared.stream_name("test"))
        .await
        .expect("stream");
    let mut names: Vec<String> = stream
        .consumer_names()
        .map(|name| name.expect("consumer name"))
        .collect()
        .await;
    names.sort();
    // One durable consumer per replica; the dot NATS forbids in names is replaced.
    assert_eq!(
        names,
        ["ranking-bestbook-7d9f-a-x", "ranking-bestbook-7d9f-b"]
    );
    for (_, _, _, task) in replicas {
        task.abort();
    }
    js.delete_stream(shared.stream_name("test"))
        .await
        .expect("clean up");
    let _ = std::fs::remove_dir_all(dir);
}

/// A handler whose first event takes longer than the consumer's 5 s ack wait.
#[derive(Default)]
struct SlowFirstEvent(std::sync::atomic::AtomicU32);

impl bookmesh::events::consumer::EventHandler for SlowFirstEvent {
    fn handle<'a>(
        &'a self,
        _txn: &'a sea_orm::DatabaseTransaction,
        _event: &'a bookmesh::events::Event,
    ) -> futures::future::BoxFuture<'a, Result<(), bookmesh::events::consumer::HandlerError>> {
        Box::pin(async move {
            if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_secs(8)).await;
            }
            Ok(())
        })
    }
}

#[tokio::test]
#[ignore = "needs nats-server with JetStream: make test-nats"]
async fn a_step_longer_than_the_ack_wait_is_not_redelivered_while_it_runs() {
    let (dir, settings, producer_db, relay) = producer_with_events(2).await;
    publish_until(&producer_db, &settings, &relay, 2).await;
    let handler = Arc::new(SlowFirstEvent::default());
    let processor = Arc::new(Processor::new(
        event_tables_database(&dir, "slow").await,
        ConsumerConfig::new("slow", "test"),
        handler.clone(),
    ));
    let readiness = Readiness::new();
    readiness.set_serving(true);
    let task = tokio::spawn(run_consumer(
        processor.clone(),
        settings.clone(),
        "slow".into(),
        "test".into(),
        readiness,
    ));
    let js = async_nats::jetstream::new(
        async_nats::connect(settings.url.as_str())
            .await
            .expect("nats"),
    );
    let stream = js
        .get_stream(settings.stream_name("test"))
        .await
        .expect("stream");
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        bookmesh::testing::eventually("the consumer exists", Duration::from_secs(20), || {
            let stream = stream.clone();
            async move {
                let mut names = stream.consumer_names();
                let name = names.next().await?.ok()?;
                stream.get_consumer(&name).await.ok()
            }
        })
        .await;
    // While the slow step runs (8 s, past the 5 s ack wait), watch what the server does with
    // the message it is waiting an ack for.
    let mut most_redelivered = 0;
    while processor.position().await.unwrap_or_default() < 2 {
        if let Ok(info) = consumer.info().await {
            most_redelivered = most_redelivered.max(info.num_redelivered);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "slow step: at most {most_redelivered} redelivered while it ran, handler called {} times",
        handler.0.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(most_redelivered, 0, "progress acks held the message");
    assert_eq!(handler.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    task.abort();
    js.delete_stream(settings.stream_name("test"))
        .await
        .expect("clean up");
    let _ = std::fs::remove_dir_all(dir);
}
