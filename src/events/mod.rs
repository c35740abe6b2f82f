//! Eventual consistency between services, without two-phase commit.
//!
//! - A state change and the events it produces are written in ONE local transaction: the
//!   events go to the producer's own outbox table ([`outbox::append`]).
//! - A relay ([`outbox::Relay`]) publishes committed outbox rows in order: it gives each a
//!   position on the producer's feed. Nothing is published for a rolled-back change, and
//!   nothing committed is lost.
//! - The broker-free transport is the feed itself, served over gRPC
//!   ([`feed::EventFeed`], `bookmesh.events.v1.EventFeedService`): catch-up after a sequence,
//!   then a live tail.
//! - Consumers ([`consumer`]) keep their cursor in their own database and record each applied
//!   event id in an inbox in the same transaction as the effect, so a redelivered event changes
//!   nothing; an event that keeps failing goes to a dead-letter table.

pub mod consumer;
pub mod dead_letters;
pub mod feed;
pub mod nats;
pub mod outbox;
pub mod tables;

pub use crate::proto::events::v1::Event;

/// A protobuf message that travels as an event payload.
pub trait EventPayload: prost::Message + Default {
    /// Fully qualified protobuf name, the envelope's `event_type`.
    const TYPE: &'static str;
}

macro_rules! event_payloads {
    ($($message:path => $name:literal),* $(,)?) => {
        $(impl EventPayload for $message {
            const TYPE: &'static str = $name;
        })*
    };
}

event_payloads! {
    crate::proto::rental::v1::ItemRented => "bookmesh.rental.v1.ItemRented",
    crate::proto::rental::v1::RentCanceled => "bookmesh.rental.v1.RentCanceled",
    crate::proto::rental::v1::RentConfirmed => "bookmesh.rental.v1.RentConfirmed",
    crate::proto::rental::v1::ItemReturned => "bookmesh.rental.v1.ItemReturned",
    crate::proto::rental::v1::ReturnCanceled => "bookmesh.rental.v1.ReturnCanceled",
    crate::proto::rental::v1::OverdueCleared => "bookmesh.rental.v1.OverdueCleared",
    crate::proto::book::v1::BookReturned => "bookmesh.book.v1.BookReturned",
    crate::proto::book::v1::BookReturnRejected => "bookmesh.book.v1.BookReturnRejected",
    crate::proto::member::v1::PointsDeducted => "bookmesh.member.v1.PointsDeducted",
    crate::proto::member::v1::PointsDeductionRejected => "bookmesh.member.v1.PointsDeductionRejected",
    crate::proto::book::v1::BookReserved => "bookmesh.book.v1.BookReserved",
    crate::proto::book::v1::BookReservationRejected => "bookmesh.book.v1.BookReservationRejected",
}

/// An event about to be written to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: &'static str,
    pub aggregate_id: String,
    pub payload: Vec<u8>,
}

impl NewEvent {
    pub fn new<P: EventPayload>(aggregate_id: impl ToString, payload: &P) -> Self {
        Self {
            event_type: P::TYPE,
            aggregate_id: aggregate_id.to_string(),
            payload: payload.encode_to_vec(),
        }
    }
}

/// The payload of `event` if it is a `P`; `None` for other types; an error if it claims to be a
/// `P` but does not decode.
pub fn decode<P: EventPayload>(event: &Event) -> Result<Option<P>, prost::DecodeError> {
    if event.event_type != P::TYPE {
        return Ok(None);
    }
    let bytes = event
        .payload
        .as_ref()
        .map(|any| any.value.as_slice())
        .unwrap_or_default();
    P::decode(bytes).map(Some)
}

/// The type URL of a payload in the envelope's `Any`.
pub fn type_url(event_type: &str) -> String {
    format!("type.googleapis.com/{event_type}")
}

/// Starts a producer's outbox relay (once migrations ran) and builds its event feed service.
/// Returns the relay (to wake it after commits), the feed to serve, and the relay's task.
/// With the NATS transport it also starts the publisher that forwards the feed to JetStream
/// (the feed stays served: consumers in other languages may still use it).
pub fn start_producer(
    producer: &'static str,
    db: sea_orm::DatabaseConnection,
    readiness: &crate::server::Readiness,
    transport: &crate::config::EventArgs,
) -> (
    outbox::Relay,
    crate::server::EventFeedServer,
    tokio::task::JoinHandle<()>,
) {
    let relay = outbox::Relay::new(producer, db.clone());
    let feed = feed::EventFeed::new(producer, db.clone(), relay.published(), readiness.clone());
    let nats = transport.nats();
    let task = {
        let relay = relay.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            readiness.started().await;
            let relay_loop = relay.clone().run(std::time::Duration::from_millis(500));
            match nats {
                Some(settings) => {
                    let publisher =
                        nats::run_publisher(db, producer, settings, relay.published(), readiness);
                    tokio::join!(relay_loop, publisher);
                }
                None => relay_loop.await,
            }
        })
    };
    (
        relay,
        crate::proto::events::v1::event_feed_service_server::EventFeedServiceServer::new(feed),
        task,
    )
}

/// Starts consuming `producer`'s events into this service's database, over the configured
/// transport: the producer's feed at `endpoints`, or its JetStream stream. Returns the
/// consumer's task and its processor (for the dead-letter service's redrives).
pub fn start_consumer(
    db: sea_orm::DatabaseConnection,
    config: consumer::ConsumerConfig,
    endpoints: Vec<String>,
    handler: std::sync::Arc<dyn consumer::EventHandler>,
    readiness: &crate::server::Readiness,
    transport: &crate::config::EventArgs,
) -> Result<
    (
        tokio::task::JoinHandle<()>,
        std::sync::Arc<consumer::Processor>,
    ),
    crate::client::UpstreamError,
> {
    let upstream = crate::client::Upstream::new(crate::client::UpstreamConfig::new(
        format!("{}-feed", config.producer),
        endpoints,
    ))?;
    let (consumer_name, producer_name) = (config.consumer.clone(), config.producer.clone());
    let processor = std::sync::Arc::new(consumer::Processor::new(db, config, handler));
    let task = match transport.nats() {
        Some(settings) => tokio::spawn(nats::run_consumer(
            processor.clone(),
            settings,
            consumer_name,
            producer_name,
            readiness.clone(),
        )),
        None => tokio::spawn(consumer::run_feed_consumer(
            processor.clone(),
            upstream,
            readiness.clone(),
        )),
    };
    Ok((task, processor))
}

/// The dead-letter service over a service's subscriptions.
pub fn dead_letter_service(
    db: sea_orm::DatabaseConnection,
    processors: impl IntoIterator<Item = std::sync::Arc<consumer::Processor>>,
) -> crate::server::DeadLetterServer {
    crate::proto::events::v1::dead_letter_service_server::DeadLetterServiceServer::new(
        dead_letters::DeadLetters::new(db, processors),
    )
}
