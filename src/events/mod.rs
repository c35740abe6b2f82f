//! Eventual consistency between services, without two-phase commit.
//!
//! - A state change and the events it produces are written in ONE local transaction: the
//!   events go to the producer's own outbox table ([`outbox::append`]).
//! - A relay ([`outbox::Relay`]) publishes committed outbox rows in order: it gives each a
//!   position on the producer's feed. Nothing is published for a rolled-back change, and
//!   nothing committed is lost.
//! - The broker-free transport is the feed itself, served over gRPC
//!   ([`feed::EventFeed`], `bookmesh.events.v1.EventFeedService`): catch-up after a sequence,
//!   then a live tail. With NATS JetStream ([`nats`]) the feed is forwarded to a stream.
//! - Consumers ([`consumer`]) keep their cursor in their own database and record each applied
//!   event id in an inbox in the same transaction as the effect, so a redelivered event changes
//!   nothing; an event that keeps failing goes to a dead-letter table ([`dead_letters`]).
//!
//! Submodules import each other directly, never through this facade, so the module graph
//! stays free of cycles.

pub mod consumer;
pub(crate) mod dead_letters;
mod envelope;
pub(crate) mod feed;
pub mod nats;
pub mod outbox;
pub mod retention;
pub mod tables;

use std::sync::Arc;

use tokio::task::JoinHandle;

pub use envelope::{Event, EventPayload, NewEvent, decode, is, type_url};

use crate::client::{Upstream, UpstreamConfig, UpstreamError};
use crate::config::EventArgs;
use crate::identity::Identity;
use crate::readiness::Readiness;

/// A producer's running parts.
pub(crate) struct Producer {
    /// The feed to serve beside the service's API.
    pub(crate) feed: feed::EventFeedServer,
    /// The relay (and, with NATS, the JetStream publisher), until the service stops.
    pub(crate) task: JoinHandle<()>,
}

/// Starts a producer's outbox relay (once migrations ran) and builds its event feed service.
/// With the NATS transport it also starts the publisher that forwards the feed to JetStream
/// (the feed stays served: consumers in other languages may still use it).
pub(crate) fn start_producer(
    relay: outbox::Relay,
    readiness: &Readiness,
    transport: &EventArgs,
) -> Producer {
    let feed = feed::EventFeed::new(
        relay.producer(),
        relay.db().clone(),
        relay.published(),
        readiness.clone(),
        transport.max_feed_subscribers,
    );
    let nats = nats::NatsSettings::from_args(transport);
    let task = {
        let relay = relay.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            readiness.started().await;
            let relay_loop = relay.clone().run(std::time::Duration::from_millis(500));
            match nats {
                Some(settings) => {
                    let publisher = nats::run_publisher(
                        relay.db().clone(),
                        relay.producer(),
                        settings,
                        relay.published(),
                        readiness,
                    );
                    tokio::join!(relay_loop, publisher);
                }
                None => relay_loop.await,
            }
        })
    };
    Producer {
        feed: feed::EventFeedServer::new(feed),
        task,
    }
}

/// A consumer's running parts.
pub(crate) struct Consumer {
    /// Reads the producer's events until the service stops.
    pub(crate) task: JoinHandle<()>,
    /// Applies them; the dead-letter service redrives through it.
    pub(crate) processor: Arc<consumer::Processor>,
}

/// Starts consuming the events of `processor`'s producer over the configured transport: the
/// producer's feed at `endpoints`, or its JetStream stream.
pub(crate) fn start_consumer(
    processor: consumer::Processor,
    endpoints: Vec<String>,
    identity: &Identity,
    readiness: &Readiness,
    transport: &EventArgs,
) -> Result<Consumer, UpstreamError> {
    let config = processor.config().clone();
    let mut feed = UpstreamConfig::new(format!("{}-feed", config.producer), endpoints);
    // The feed is served by the producer itself, and must prove it.
    feed.peer = config.producer.clone();
    let upstream = Upstream::new(feed, identity)?;
    let processor = Arc::new(processor);
    let task = match nats::NatsSettings::from_args(transport) {
        Some(settings) => tokio::spawn(nats::run_consumer(
            processor.clone(),
            settings,
            config.consumer,
            config.producer,
            readiness.clone(),
        )),
        None => tokio::spawn(consumer::run_feed_consumer(
            processor.clone(),
            upstream,
            readiness.clone(),
        )),
    };
    Ok(Consumer { task, processor })
}
