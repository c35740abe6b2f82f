//! The broker-free transport: a producer serves its published outbox as a gRPC server stream.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_types::StatusExt as _;

use super::envelope::Event;
use super::outbox::envelope;
use super::tables::outbox;
use crate::proto::events::v1::event_feed_service_server::{
    EventFeedService, EventFeedServiceServer,
};
use crate::proto::events::v1::{SubscribeRequest, SubscribeResponse};
use crate::readiness::Readiness;

/// The event feed a producing service serves beside its own API.
pub(crate) type EventFeedServer = EventFeedServiceServer<EventFeed>;

/// Events read from the database per query while catching up.
const BATCH: u64 = 200;

/// `bookmesh.events.v1.EventFeedService` over one producer's outbox.
#[derive(Clone)]
pub(crate) struct EventFeed {
    producer: &'static str,
    db: DatabaseConnection,
    published: watch::Receiver<i64>,
    readiness: Readiness,
    /// One per open subscription (`--max-feed-subscribers`).
    subscriptions: Arc<Semaphore>,
    max_subscribers: usize,
}

impl EventFeed {
    /// `published` comes from the producer's relay; `readiness` ends open streams when the
    /// server starts draining (subscribers resubscribe elsewhere).
    pub(crate) fn new(
        producer: &'static str,
        db: DatabaseConnection,
        published: watch::Receiver<i64>,
        readiness: Readiness,
        max_subscribers: usize,
    ) -> Self {
        Self {
            producer,
            db,
            published,
            readiness,
            subscriptions: Arc::new(Semaphore::new(max_subscribers)),
            max_subscribers,
        }
    }

    async fn batch_after(&self, after: i64) -> Result<Vec<Event>, sea_orm::DbErr> {
        let rows = outbox::Entity::find()
            .filter(outbox::Column::FeedSequence.gt(after))
            .order_by_asc(outbox::Column::FeedSequence)
            .limit(BATCH)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| envelope(self.producer, row))
            .collect())
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventFeedService for EventFeed {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let after = request.into_inner().after_sequence;
        if after < 0 {
            let mut violations = crate::status::FieldViolations::new();
            violations.add("after_sequence", "must not be negative");
            violations.into_result()?;
        }
        // A cursor behind the outbox's retention would skip what was pruned: say so. A new
        // subscriber (0) starts at the oldest event kept.
        if after > 0
            && let Some(oldest) = super::retention::pruned_after(&self.db, after)
                .await
                .map_err(|e| crate::status::database_error(&e))?
        {
            return Err(Status::out_of_range(format!(
                "events after {after} up to {} were pruned (outbox retention); the oldest kept is {oldest}: \
                 rebuild this consumer's state, then subscribe from there",
                oldest - 1
            )));
        }
        let Ok(subscription) = self.subscriptions.clone().try_acquire_owned() else {
            return Err(Status::with_error_details(
                tonic::Code::ResourceExhausted,
                format!(
                    "{} event feed: all {} subscriptions are taken; retry later",
                    self.producer, self.max_subscribers
                ),
                tonic_types::ErrorDetails::with_error_info(
                    "FEED_SUBSCRIBERS_EXHAUSTED",
                    "bookmesh.io",
                    [(
                        "max_feed_subscribers".to_owned(),
                        self.max_subscribers.to_string(),
                    )],
                ),
            ));
        };
        let subscriber = Subscriber::start(self.producer, subscription);
        // Bounded: a slow subscriber slows its own reader task, not the producer's memory.
        let (tx, rx) = mpsc::channel(64);
        let feed = self.clone();
        tokio::spawn(async move {
            feed.pump(after, tx).await;
            drop(subscriber);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl EventFeed {
    /// Catches up from the database, then waits for the relay's next publication.
    async fn pump(self, mut after: i64, tx: mpsc::Sender<Result<SubscribeResponse, Status>>) {
        let mut published = self.published.clone();
        let mut stopping = self.readiness.stopping_signal();
        loop {
            if *stopping.borrow() {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "producer is shutting down; resubscribe",
                    )))
                    .await;
                return;
            }
            let events = match self.batch_after(after).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "event feed query failed");
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "event feed unavailable; resubscribe",
                        )))
                        .await;
                    return;
                }
            };
            let caught_up = (events.len() as u64) < BATCH;
            for event in events {
                after = event.sequence;
                if tx
                    .send(Ok(SubscribeResponse { event: Some(event) }))
                    .await
                    .is_err()
                {
                    return; // the subscriber went away
                }
            }
            if !caught_up {
                continue;
            }
            // Live tail: wait for the relay (or poll, for rows another replica's relay published).
            tokio::select! {
                _ = published.changed() => {},
                _ = stopping.changed() => {},
                () = tokio::time::sleep(Duration::from_millis(500)) => {},
                () = tx.closed() => return,
            }
        }
    }
}

/// One open subscription: its slot, and its count in `bookmesh_feed_subscribers`.
struct Subscriber {
    producer: &'static str,
    _slot: OwnedSemaphorePermit,
}

impl Subscriber {
    fn start(producer: &'static str, slot: OwnedSemaphorePermit) -> Self {
        crate::metrics::FEED_SUBSCRIBERS
            .with_label_values(&[producer])
            .inc();
        Self {
            producer,
            _slot: slot,
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        crate::metrics::FEED_SUBSCRIBERS
            .with_label_values(&[self.producer])
            .dec();
    }
}
