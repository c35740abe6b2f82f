//! The broker's users, as the manifests configure them (k8s/base/nats/nats.conf), on a real
//! nats-server: each service can do its part of the event flow over TLS — the rental service
//! publishes its events, the book service consumes them — and nothing more: it cannot publish
//! on another producer's subject, create another producer's stream, read another service's
//! consumer, or read another user's replies.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::Info as ConsumerInfo;
use bookmesh::events::consumer::{ConsumerConfig, Processor};
use bookmesh::events::nats::{run_consumer, run_publisher};
use bookmesh::events::outbox::{Relay, append};
use bookmesh::events::{Event, NewEvent};
use bookmesh::readiness::Readiness;

use bookmesh::testing::{CountingHandler, event_tables_database, eventually};
use futures::StreamExt as _;

use crate::nats_broker::Broker;

/// The envelope as the publisher encodes it.
fn bookmesh_encode(event: &Event) -> Vec<u8> {
    use prost::Message as _;
    event.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the rendered manifests and nats-server: make check-k8s"]
async fn each_service_nats_user_does_its_part_of_the_event_flow_and_nothing_more() {
    let broker = Broker::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let readiness = Readiness::new();
    readiness.set_serving(true);

    // rental publishes its events, as its relay and publisher do in the cluster.
    let rental_db = event_tables_database(dir.path(), "rental").await;
    let relay = Relay::new("rental", rental_db.clone());
    append(
        &rental_db,
        vec![NewEvent {
            event_type: "test.Event".into(),
            aggregate_id: "a".into(),
            payload: vec![1],
        }],
    )
    .await
    .expect("append");
    relay.publish_pending().await.expect("relay");
    let publisher = tokio::spawn(run_publisher(
        rental_db.clone(),
        "rental",
        broker.settings("rental"),
        relay.published(),
        readiness.clone(),
    ));

    // book consumes them through its own durable consumer.
    let book_db = event_tables_database(dir.path(), "book").await;
    let handler = Arc::new(CountingHandler::default());
    let processor = Arc::new(Processor::new(
        book_db,
        ConsumerConfig::new("book", "rental"),
        handler.clone(),
    ));
    let consumer = tokio::spawn(run_consumer(
        processor,
        broker.settings("book"),
        "book".into(),
        "rental".into(),
        readiness.clone(),
    ));
    let applied = tokio::time::timeout(Duration::from_secs(30), async {
        while handler.count() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        applied.is_ok(),
        "book never applied rental's event; the broker said:\n{}",
        broker.log()
    );
    // An envelope on rental's stream that claims another producer is refused, not applied.
    let rental = broker.raw("rental").await;
    let forged = Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: "test.Event".into(),
        producer: "member".into(),
        sequence: 99,
        ..Event::default()
    };
    rental
        .publish("bookmesh.rental.events", bookmesh_encode(&forged).into())
        .await
        .expect("rental publishes on its own subject")
        .await
        .expect("stored");
    let book = broker.raw("book").await;
    let stream = book
        .get_stream("BOOKMESH_RENTAL")
        .await
        .expect("book reads rental's stream");
    // Waits until book's consumer reports what `condition` asks.
    let book_consumer_until = |what: &'static str, condition: fn(&ConsumerInfo) -> bool| {
        let stream = stream.clone();
        eventually(what, Duration::from_secs(30), move || {
            let stream = stream.clone();
            async move {
                let mut consumer = stream
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>("book")
                    .await
                    .ok()?;
                let info = consumer.info().await.ok()?;
                condition(info).then_some(())
            }
        })
    };
    book_consumer_until("book's consumer acknowledged the forged envelope", |info| {
        info.ack_floor.stream_sequence >= 2
    })
    .await;
    assert_eq!(handler.count(), 1, "the forged envelope was applied");

    // From here on nobody consumes: what is left in a consumer stays there to be stolen.
    publisher.abort();
    consumer.abort();
    let _ = consumer.await;
    // A pull the stopped consumer left waiting on the server would take the next event; the
    // server forgets it once it sees the connection gone.
    book_consumer_until("book's stopped consumer has no pull waiting", |info| {
        info.num_waiting == 0
    })
    .await;
    rental
        .publish("bookmesh.rental.events", "one more".into())
        .await
        .expect("rental publishes")
        .await
        .expect("stored");

    // The pure consumers (the best-seller and notification services) publish nothing; the
    // replicas of each share one consumer of rental's stream, named after the service: it may
    // make that consumer and pull from it...
    for service in ["bestbook", "notification"] {
        pure_consumer_reads_only_its_own_consumer(&broker, service).await;
    }

    // Not on another producer's subject...
    let forged = async {
        book.publish("bookmesh.rental.events", "forged".into())
            .await?
            .await
            .map_err(async_nats::Error::from)
    }
    .await;
    assert!(forged.is_err(), "book published on rental's subject");
    // ...nor another producer's stream...
    let created = book
        .create_stream(async_nats::jetstream::stream::Config {
            name: "BOOKMESH_MEMBER".into(),
            subjects: vec!["bookmesh.member.events".into()],
            ..Default::default()
        })
        .await;
    assert!(created.is_err(), "book created member's stream");
    // ...nor another service's consumer of a stream it reads.
    let stolen = stream
        .get_or_create_consumer(
            "member",
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("member".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(stolen.is_err(), "book attached to member's consumer");
    // And rental, which consumes book's events, cannot publish them either.
    let forged = async {
        rental
            .publish("bookmesh.book.events", "forged".into())
            .await?
            .await
            .map_err(async_nats::Error::from)
    }
    .await;
    assert!(forged.is_err(), "rental published on book's subject");
    // A user that is not in nats.conf does not get in.
    let stranger = async_nats::ConnectOptions::new()
        .add_root_certificates(broker.ca.clone())
        .require_tls(true)
        .user_and_password("stranger".into(), "guess".into())
        .connect(&broker.url)
        .await;
    assert!(stranger.is_err(), "an unknown user connected");
}

/// A service that only consumes rental's events (`bestbook`, `notification`), as its NATS user:
/// it makes its one shared durable consumer, named after itself, and pulls from it; it makes no
/// other consumer (one per pod, say), reads and pulls from no other service's consumer of the
/// stream, and publishes nothing.
async fn pure_consumer_reads_only_its_own_consumer(broker: &Broker, service: &str) {
    let js = broker.raw(service).await;
    let stream = js
        .get_stream("BOOKMESH_RENTAL")
        .await
        .unwrap_or_else(|e| panic!("{service} reads rental's stream: {e}"));
    let own = stream
        .get_or_create_consumer(
            service,
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(service.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{service} makes its shared consumer: {e}"));
    let pulled = own
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch")
        .next()
        .await;
    assert!(
        matches!(pulled, Some(Ok(_))),
        "{service} pulls from its own consumer"
    );
    // A pull as the client library makes it, by hand, so that nothing but the permission is
    // in the way: the request on MSG.NEXT with a reply inbox, on which a pulled event arrives
    // (under its stream subject, which is why core `request` cannot be used here).
    let pull_next = |consumer: &str| {
        let client = js.client();
        let subject = format!("$JS.API.CONSUMER.MSG.NEXT.BOOKMESH_RENTAL.{consumer}");
        async move {
            let inbox = client.new_inbox();
            let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
            // A denied publish is dropped by the server (and logged): nothing comes back.
            let sent = client
                .publish_with_reply(subject, inbox, r#"{"batch":1,"expires":1000000000}"#.into())
                .await
                .is_ok()
                && client.flush().await.is_ok();
            let answer = tokio::time::timeout(Duration::from_secs(3), replies.next()).await;
            // A pulled event has a payload and no status; a 404 or 408 is no event.
            sent && matches!(answer, Ok(Some(message)) if message.status.is_none() && !message.payload.is_empty())
        }
    };
    assert!(
        pull_next(service).await,
        "a raw pull from {service}'s own consumer works (the control for the next checks); the broker said:\n{}",
        broker.log()
    );
    // ...but no consumer under another name, such as one per pod...
    let per_pod_name = format!("{service}-pod-a");
    let per_pod = stream
        .get_or_create_consumer(
            &per_pod_name,
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(per_pod_name.clone()),
                ..Default::default()
            },
        )
        .await;
    assert!(per_pod.is_err(), "{service} made a consumer of its pod");
    // ...nor any other service's consumer of that stream: none of the durable consumers that
    // nats.conf gives another user there...
    let others: BTreeSet<&str> = broker
        .config
        .split("\"$JS.API.CONSUMER.DURABLE.CREATE.BOOKMESH_RENTAL.")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| *name != "*" && *name != service)
        .collect();
    assert!(
        others.contains("book") && others.contains("member"),
        "book and member consume rental's events: {others:?}"
    );
    for other in &others {
        broker
            .raw(other)
            .await
            .get_stream("BOOKMESH_RENTAL")
            .await
            .expect("its stream")
            .get_or_create_consumer(
                other,
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some((*other).into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{other} makes its own consumer: {e}"))
            .info()
            .await
            .map(|info| {
                assert!(
                    info.num_pending > 0,
                    "{other}'s consumer has an event to steal"
                )
            })
            .expect("its consumer's info");
        assert!(
            stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(other)
                .await
                .is_err(),
            "{service} read {other}'s consumer"
        );
        assert!(
            !pull_next(other).await,
            "{service} pulled from {other}'s consumer"
        );
    }
    // ...and it publishes nothing, not even on the subject of the stream it reads.
    let forged = async {
        js.publish("bookmesh.rental.events", "forged".into())
            .await?
            .await
            .map_err(async_nats::Error::from)
    }
    .await;
    assert!(forged.is_err(), "{service} published on rental's subject");
}
