//! Consuming another service's events with exactly-once effects.
//!
//! For each event, in ONE local transaction: if the event id is in the inbox, only the cursor
//! moves (a redelivery changes nothing); otherwise the handler applies the effect (and may
//! append events to this service's outbox), the id goes into the inbox and the cursor moves.
//! A handler that keeps failing is retried with backoff `max_attempts` times, then the event is
//! moved to the dead-letter table (and logged with its id) so the stream goes on.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter,
};
use tokio_stream::StreamExt;

use super::envelope::Event;
use super::outbox::Relay;
use super::tables::{cursor, dead_letter, inbox};
use crate::client::Upstream;
use crate::proto::events::v1::SubscribeRequest;
use crate::proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use crate::readiness::Readiness;

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The database failed (transient if it is unreachable or contended).
    #[error(transparent)]
    Database(#[from] DbErr),
    /// The payload is not what its type says.
    #[error("undecodable payload: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The event cannot be applied (an unknown member, a broken rule): retried a few times,
    /// then dead-lettered.
    #[error("{0}")]
    Rejected(String),
    /// A condition that passes by itself (a lost race, a busy database): retried without
    /// counting towards the dead-letter limit.
    #[error("transient: {0}")]
    Transient(String),
}

impl HandlerError {
    /// What a dead letter shows its readers (ListDeadLetters, RedriveDeadLetter): the
    /// handler's own reason, but never a database's message, which can carry SQL, table
    /// names or values. The full error is in the service's log, with the event id.
    pub fn public_reason(&self) -> String {
        match self {
            Self::Database(_) => "database error (the service's log has the details)".to_owned(),
            Self::Decode(_) => "undecodable payload".to_owned(),
            Self::Rejected(reason) => reason.clone(),
            Self::Transient(reason) => format!("transient: {reason}"),
        }
    }

    /// Whether retrying later will work without anyone fixing anything: the database is
    /// unreachable or busy, or another transaction won a race. Such failures never
    /// dead-letter an event.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transient(_) => true,
            Self::Database(error) => {
                crate::status::database_unreachable(error) || crate::db::is_contention(error)
            }
            _ => false,
        }
    }
}

/// Applies one kind of events inside the consumer's transaction.
pub trait EventHandler: Send + Sync + 'static {
    /// Applies `event`; events of types it does not care about are a no-op `Ok`.
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// A shared handler handles as its owner would (tests keep a handle to count applications).
impl<H: EventHandler> EventHandler for Arc<H> {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        (**self).handle(txn, event)
    }
}

/// One subscription of a consuming service to a producer's feed.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consuming service ("book").
    pub consumer: String,
    /// The producer ("rental").
    pub producer: String,
    /// Attempts of a failing handler before the event is dead-lettered.
    pub max_attempts: u32,
    /// First pause before retrying a failed event (and resubscribing).
    pub initial_backoff: Duration,
    /// Longest such pause.
    pub max_backoff: Duration,
}

impl ConsumerConfig {
    /// `consumer`'s subscription to `producer`'s events, with the documented retry defaults.
    pub fn new(consumer: &str, producer: &str) -> Self {
        Self {
            consumer: consumer.to_owned(),
            producer: producer.to_owned(),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }

    /// The key of this subscription's cursor and inbox rows: `book:rental`.
    pub fn subscription(&self) -> String {
        format!("{}:{}", self.consumer, self.producer)
    }
}

/// Outcome of handling one delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The effect committed.
    Applied,
    /// Already applied before: nothing changed.
    Duplicate,
    /// Gave up after `max_attempts`: the event is in the dead-letter table.
    DeadLettered,
}

/// Applies events to a service's database; transport-independent (the feed and JetStream both
/// deliver through it).
pub struct Processor {
    db: DatabaseConnection,
    config: ConsumerConfig,
    handler: Box<dyn EventHandler>,
    /// This service's own outbox relay: a handler may append events, and they should not wait
    /// for the relay's next poll.
    relay: Option<Relay>,
}

impl Processor {
    /// Applies events with `handler` in `db`.
    pub fn new(db: DatabaseConnection, config: ConsumerConfig, handler: impl EventHandler) -> Self {
        Self {
            db,
            config,
            handler: Box::new(handler),
            relay: None,
        }
    }

    /// Wakes `relay` after each commit that applied an event.
    pub fn waking(mut self, relay: Relay) -> Self {
        self.relay = Some(relay);
        self
    }

    /// The subscription this processor applies.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    fn committed(&self) {
        if let Some(relay) = &self.relay {
            relay.wake();
        }
    }

    /// Exports what happened to an event: outcome counts, position and lag.
    fn record(&self, event: &Event, handled: Handled) {
        let subscription = self.config.subscription();
        let outcome = match handled {
            Handled::Applied => "applied",
            Handled::Duplicate => "duplicate",
            Handled::DeadLettered => "dead_lettered",
        };
        crate::metrics::CONSUMER_EVENTS
            .with_label_values(&[subscription.as_str(), outcome])
            .inc();
        crate::metrics::CONSUMER_POSITION
            .with_label_values(&[subscription.as_str()])
            .set(event.sequence);
        if let Some(occurred) = &event.occurred_at {
            let now = chrono::Utc::now();
            let lag = now.timestamp() as f64 + f64::from(now.timestamp_subsec_nanos()) / 1e9
                - (occurred.seconds as f64 + f64::from(occurred.nanos) / 1e9);
            crate::metrics::CONSUMER_LAG
                .with_label_values(&[subscription.as_str()])
                .set(lag.max(0.0));
        }
    }

    /// `<consumer>:<producer>`, the key of this subscription's rows.
    pub fn subscription(&self) -> String {
        self.config.subscription()
    }

    /// Applies a dead-lettered event once more (exactly once, as any delivery). Applied or
    /// already applied: the dead letter is removed; failed again: it stays with the new error,
    /// which is returned.
    pub(crate) async fn redrive(
        &self,
        row: dead_letter::Model,
    ) -> Result<Result<Handled, String>, DbErr> {
        let event = <Event as prost::Message>::decode(row.envelope.as_slice())
            .map_err(|e| DbErr::Custom(format!("dead letter {} is unreadable: {e}", row.id)))?;
        let handled = self.try_apply(&event).await.map_err(|error| {
            tracing::warn!(event_id = %event.event_id, dead_letter_id = row.id, %error, "redrive failed");
            error.public_reason()
        });
        match &handled {
            Ok(_) => {
                dead_letter::Entity::delete_by_id(row.id)
                    .exec(&self.db)
                    .await?;
                self.committed();
                tracing::info!(event_id = %event.event_id, dead_letter_id = row.id, "dead letter redriven");
            }
            Err(error) => {
                dead_letter::Entity::update_many()
                    .col_expr(dead_letter::Column::Error, Expr::value(error.clone()))
                    .col_expr(dead_letter::Column::Attempts, Expr::value(row.attempts + 1))
                    .col_expr(dead_letter::Column::FailedAt, Expr::value(crate::db::now()))
                    .filter(dead_letter::Column::Id.eq(row.id))
                    .exec(&self.db)
                    .await?;
            }
        }
        Ok(handled)
    }

    /// The position after which the next subscription starts.
    pub async fn position(&self) -> Result<i64, DbErr> {
        cursor_position(&self.db, &self.config.subscription()).await
    }

    /// Handles one delivered event: applied, ignored as a duplicate, or dead-lettered after
    /// `max_attempts`. Returns an error only when even recording the outcome failed (the
    /// database is down): the caller must not move past the event then.
    pub async fn process(&self, event: &Event) -> Result<Handled, DbErr> {
        // Injected faults (docs/faults.md): a slow delivery, then the same event twice.
        if let Some(delay) = crate::faults::event_delay() {
            tokio::time::sleep(delay).await;
        }
        let handled = self.process_once(event).await?;
        if handled == Handled::Applied && crate::faults::duplicate_delivery() {
            let again = self.process_once(event).await?;
            tracing::info!(event_id = %event.event_id, ?again, "fault injected: event delivered twice");
        }
        Ok(handled)
    }

    /// Handles events delivered together (in feed order). When every one of them applies,
    /// they commit in ONE transaction: one turn of the SQLite writer and one commit for the
    /// batch instead of one per event, with the inbox and the cursor exactly as one by one
    /// would leave them. If any of them fails (or a fault switch that acts on events is on),
    /// the batch rolls back and its events go one by one through [`Self::process`], which
    /// retries, dead-letters and records as always: batching never changes an outcome.
    pub async fn process_batch(&self, events: &[Event]) -> Result<(), DbErr> {
        if events.len() > 1 && !crate::faults::event_faults_active() {
            match self.try_apply_batch(events).await {
                Ok(outcomes) => {
                    if outcomes.contains(&Handled::Applied) {
                        crate::faults::crash_point(crate::faults::crash_points::AFTER_APPLY);
                        self.committed();
                    }
                    for (event, handled) in events.iter().zip(outcomes) {
                        self.record(event, handled);
                    }
                    return Ok(());
                }
                Err(error) => {
                    tracing::debug!(
                        subscription = %self.config.subscription(),
                        events = events.len(),
                        %error,
                        "batch not applied; applying its events one by one"
                    );
                }
            }
        }
        for event in events {
            self.process(event).await?;
        }
        Ok(())
    }

    /// Applies `events` in one transaction, each in its own consume span (continuing its
    /// producer's trace); the first failure rolls all of them back.
    async fn try_apply_batch(&self, events: &[Event]) -> Result<Vec<Handled>, HandlerError> {
        let (txn, _turn) = crate::db::begin_write(&self.db, crate::db::Writer::Consumer).await?;
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let span = self.consume_span(event);
            let trace = crate::telemetry::enter_trace(
                &span,
                crate::trace_context::TraceContext::parse(&event.traceparent),
            );
            let handled = tracing::Instrument::instrument(
                // The same event twice in one batch (a redelivery) applies once: the
                // transaction sees its own inbox rows.
                crate::trace_context::scope(trace, self.apply_in(&txn, event)),
                span,
            )
            .await?;
            outcomes.push(handled);
        }
        if let Some(last) = events.iter().map(|event| event.sequence).max() {
            advance(&txn, &self.config.subscription(), last).await?;
        }
        txn.commit().await?;
        Ok(outcomes)
    }

    /// The consumer span of one event: it continues the producing transaction's span, and the
    /// effect's log lines and the events it publishes belong to it.
    fn consume_span(&self, event: &Event) -> tracing::Span {
        tracing::info_span!(
            "consume",
            otel.name = %format!("{} process", event.event_type),
            otel.kind = "consumer",
            messaging.system = "bookmesh",
            messaging.destination.name = %event.producer,
            messaging.consumer.group.name = %self.config.consumer,
            messaging.message.id = %event.event_id,
            event_id = %event.event_id,
            event_type = %event.event_type,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    }

    async fn process_once(&self, event: &Event) -> Result<Handled, DbErr> {
        let mut backoff = self.config.initial_backoff;
        let mut last_error = String::new();
        let mut attempt = 0;
        while attempt < self.config.max_attempts.max(1) {
            let span = self.consume_span(event);
            let trace = crate::telemetry::enter_trace(
                &span,
                crate::trace_context::TraceContext::parse(&event.traceparent),
            );
            let applied = tracing::Instrument::instrument(
                crate::trace_context::scope(trace, self.try_apply(event)),
                span,
            )
            .await;
            match applied {
                Ok(handled) => {
                    if handled == Handled::Applied {
                        // Committed, not yet acknowledged: the redelivery after a crash here
                        // must change nothing (the inbox).
                        crate::faults::crash_point(crate::faults::crash_points::AFTER_APPLY);
                        self.committed();
                    }
                    self.record(event, handled);
                    return Ok(handled);
                }
                Err(error) if error.is_transient() => {
                    tracing::debug!(event_id = %event.event_id, %error, "transient failure; retrying");
                }
                Err(error) => {
                    attempt += 1;
                    tracing::warn!(
                        event_id = %event.event_id,
                        event_type = %event.event_type,
                        subscription = %self.config.subscription(),
                        attempt,
                        %error,
                        "event handler failed"
                    );
                    last_error = error.public_reason();
                    if attempt >= self.config.max_attempts {
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
        self.dead_letter(event, &last_error).await?;
        self.record(event, Handled::DeadLettered);
        tracing::error!(
            event_id = %event.event_id,
            event_type = %event.event_type,
            subscription = %self.config.subscription(),
            error = %last_error,
            "event moved to dead letters after {} attempts",
            self.config.max_attempts
        );
        Ok(Handled::DeadLettered)
    }

    async fn try_apply(&self, event: &Event) -> Result<Handled, HandlerError> {
        if crate::faults::database_outage() {
            return Err(HandlerError::Transient(
                "database outage (fault injected)".to_owned(),
            ));
        }
        let (txn, _turn) = crate::db::begin_write(&self.db, crate::db::Writer::Consumer).await?;
        let handled = self.apply_in(&txn, event).await?;
        advance(&txn, &self.config.subscription(), event.sequence).await?;
        txn.commit().await?;
        Ok(handled)
    }

    /// Inside `txn`: an event already in the inbox is a duplicate and changes nothing;
    /// otherwise the handler applies its effect and the event id goes into the inbox.
    async fn apply_in(
        &self,
        txn: &DatabaseTransaction,
        event: &Event,
    ) -> Result<Handled, HandlerError> {
        let seen = inbox::Entity::find_by_id(event.event_id.clone())
            .one(txn)
            .await?
            .is_some();
        if seen {
            return Ok(Handled::Duplicate);
        }
        if crate::faults::poison(&event.event_type) {
            return Err(HandlerError::Rejected(
                "poison event (fault injected): the handler refuses it".to_owned(),
            ));
        }
        self.handler.handle(txn, event).await?;
        inbox::Entity::insert(inbox::ActiveModel {
            event_id: Set(event.event_id.clone()),
            subscription: Set(self.config.subscription()),
            event_type: Set(event.event_type.clone()),
            processed_at: Set(crate::db::now()),
        })
        .exec(txn)
        .await?;
        Ok(Handled::Applied)
    }

    async fn dead_letter(&self, event: &Event, error: &str) -> Result<(), DbErr> {
        let (txn, _turn) = crate::db::begin_write(&self.db, crate::db::Writer::Consumer).await?;
        dead_letter::Entity::insert(dead_letter::ActiveModel {
            subscription: Set(self.config.subscription()),
            event_id: Set(event.event_id.clone()),
            event_type: Set(event.event_type.clone()),
            sequence: Set(event.sequence),
            envelope: Set(prost::Message::encode_to_vec(event)),
            error: Set(error.to_owned()),
            attempts: Set(self.config.max_attempts as i32),
            failed_at: Set(crate::db::now()),
            ..Default::default()
        })
        .exec(&txn)
        .await?;
        advance(&txn, &self.config.subscription(), event.sequence).await?;
        txn.commit().await
    }
}

/// The stored position of `key` (0 if none yet).
pub async fn cursor_position(db: &impl ConnectionTrait, key: &str) -> Result<i64, DbErr> {
    Ok(cursor::Entity::find_by_id(key.to_owned())
        .one(db)
        .await?
        .map_or(0, |row| row.position))
}

/// Moves the cursor of `key` forward (never back).
pub(crate) async fn advance_cursor(
    db: &impl ConnectionTrait,
    key: &str,
    sequence: i64,
) -> Result<(), DbErr> {
    advance(db, key, sequence).await
}

/// Moves the cursor forward (never back: a redelivered older event must not rewind it).
async fn advance(
    db: &impl ConnectionTrait,
    subscription: &str,
    sequence: i64,
) -> Result<(), DbErr> {
    if sequence <= 0 {
        return Ok(());
    }
    cursor::Entity::insert(cursor::ActiveModel {
        subscription: Set(subscription.to_owned()),
        position: Set(0),
    })
    .on_conflict_do_nothing_on([cursor::Column::Subscription])
    .exec(db)
    .await?;
    cursor::Entity::update_many()
        .col_expr(cursor::Column::Position, Expr::value(sequence))
        .filter(cursor::Column::Subscription.eq(subscription))
        .filter(cursor::Column::Position.lt(sequence))
        .exec(db)
        .await?;
    Ok(())
}

/// The most events a feed consumer applies in one transaction: big enough that a backlog
/// drains at a fraction of the commits, small enough that the writer's turn stays short.
const MAX_BATCH: usize = 64;

/// Subscribes to the producer's feed through `upstream` and processes events until the service
/// stops; reconnects with backoff, resuming after the stored cursor.
pub(crate) async fn run_feed_consumer(
    processor: Arc<Processor>,
    upstream: Upstream,
    readiness: Readiness,
) {
    readiness.started().await;
    let mut stopping = readiness.stopping_signal();
    let subscription = processor.config.subscription();
    let mut backoff = processor.config.initial_backoff;
    loop {
        if *stopping.borrow() {
            return;
        }
        let after = match processor.position().await {
            Ok(after) => after,
            Err(error) => {
                tracing::warn!(%subscription, %error, "cannot read the cursor; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(processor.config.max_backoff);
                continue;
            }
        };
        let subscribed = match upstream.channel().await {
            Some(channel) => {
                EventFeedServiceClient::new(channel)
                    .subscribe(SubscribeRequest {
                        after_sequence: after,
                    })
                    .await
            }
            None => Err(tonic::Status::unavailable("no replica of the producer")),
        };
        let mut stream = match subscribed {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::debug!(%subscription, %status, "subscription failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(processor.config.max_backoff);
                continue;
            }
        };
        tracing::info!(%subscription, after, "subscribed to the event feed");
        backoff = processor.config.initial_backoff;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut ended = false;
        while !ended {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = stopping.changed() => return,
            };
            // Whatever else has arrived already joins this event's batch (never waiting for
            // more: a lone event is applied at once).
            let mut next = Some(next);
            while let Some(delivered) = next.take() {
                match delivered {
                    Some(Ok(response)) => batch.extend(response.event),
                    Some(Err(status)) => {
                        tracing::debug!(%subscription, %status, "event stream ended; resubscribing");
                        ended = true;
                    }
                    None => ended = true,
                }
                if !ended && batch.len() < MAX_BATCH {
                    next = futures::FutureExt::now_or_never(stream.next());
                }
            }
            if batch.is_empty() {
                continue;
            }
            if let Err(error) = processor.process_batch(&batch).await {
                tracing::warn!(%subscription, events = batch.len(), %error, "cannot record the outcome; resubscribing");
                tokio::time::sleep(backoff).await;
                break;
            }
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use sea_orm::{Database, PaginatorTrait};
    use sea_orm_migration::MigratorTrait;

    use super::*;
    use crate::events::dead_letters::outcome_of;

    struct EventTables;

    impl sea_orm_migration::MigratorTrait for EventTables {
        fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
            vec![
                Box::new(super::super::tables::CreateEventTables),
                Box::new(super::super::tables::IndexEventTables),
            ]
        }
    }

    async fn db() -> DatabaseConnection {
        let db = Database::connect("sqlite::memory:").await.expect("sqlite");
        EventTables::up(&db, None).await.expect("migrate");
        db
    }

    /// Counts applications; fails the first `failures` times.
    struct Counting {
        applied: AtomicU32,
        failures: AtomicU32,
    }

    impl EventHandler for Counting {
        fn handle<'a>(
            &'a self,
            _txn: &'a DatabaseTransaction,
            _event: &'a Event,
        ) -> BoxFuture<'a, Result<(), HandlerError>> {
            Box::pin(async move {
                if self.failures.load(Ordering::SeqCst) > 0 {
                    self.failures.fetch_sub(1, Ordering::SeqCst);
                    return Err(HandlerError::Rejected("not yet".into()));
                }
                self.applied.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }

    fn event(sequence: i64) -> Event {
        Event {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: "test.Event".into(),
            sequence,
            ..Event::default()
        }
    }

    fn processor(db: &DatabaseConnection, failures: u32) -> (Processor, Arc<Counting>) {
        let handler = Arc::new(Counting {
            applied: AtomicU32::new(0),
            failures: AtomicU32::new(failures),
        });
        let mut config = ConsumerConfig::new("test", "producer");
        config.max_attempts = 3;
        config.initial_backoff = Duration::from_millis(1);
        (Processor::new(db.clone(), config, handler.clone()), handler)
    }

    #[tokio::test]
    async fn a_redelivered_event_changes_nothing() {
        let db = db().await;
        let (processor, handler) = processor(&db, 0);
        let first = event(1);
        assert_eq!(processor.process(&first).await, Ok(Handled::Applied));
        assert_eq!(processor.process(&first).await, Ok(Handled::Duplicate));
        assert_eq!(handler.applied.load(Ordering::SeqCst), 1);
        assert_eq!(processor.position().await, Ok(1));
    }

    #[tokio::test]
    async fn the_cursor_never_moves_back() {
        let db = db().await;
        let (processor, _) = processor(&db, 0);
        processor.process(&event(5)).await.expect("apply");
        processor.process(&event(3)).await.expect("apply");
        assert_eq!(processor.position().await, Ok(5));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_applied_once() {
        let db = db().await;
        let (processor, handler) = processor(&db, 2);
        assert_eq!(processor.process(&event(1)).await, Ok(Handled::Applied));
        assert_eq!(handler.applied.load(Ordering::SeqCst), 1);
    }

    /// Fails transiently (a lost race, a busy database) a number of times, then applies.
    struct Busy(AtomicU32);

    impl EventHandler for Busy {
        fn handle<'a>(
            &'a self,
            _txn: &'a DatabaseTransaction,
            _event: &'a Event,
        ) -> BoxFuture<'a, Result<(), HandlerError>> {
            Box::pin(async move {
                if self.0.load(Ordering::SeqCst) > 0 {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                    return Err(HandlerError::Transient("lost a race".into()));
                }
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn transient_failures_never_dead_letter_an_event() {
        let db = db().await;
        let mut config = ConsumerConfig::new("test", "producer");
        config.max_attempts = 2;
        config.initial_backoff = Duration::from_millis(1);
        config.max_backoff = Duration::from_millis(2);
        let processor = Processor::new(db.clone(), config, Busy(AtomicU32::new(10)));
        assert_eq!(processor.process(&event(1)).await, Ok(Handled::Applied));
        assert_eq!(dead_letter::Entity::find().count(&db).await, Ok(0));
    }

    /// Writes its effect in the consumer's transaction (a cursor row per event, so applying
    /// one twice would fail on the key), and rejects events of type "test.Bad".
    struct Effects;

    impl EventHandler for Effects {
        fn handle<'a>(
            &'a self,
            txn: &'a DatabaseTransaction,
            event: &'a Event,
        ) -> BoxFuture<'a, Result<(), HandlerError>> {
            Box::pin(async move {
                if event.event_type == "test.Bad" {
                    return Err(HandlerError::Rejected("bad event".into()));
                }
                cursor::Entity::insert(cursor::ActiveModel {
                    subscription: Set(format!("effect:{}", event.event_id)),
                    position: Set(event.sequence),
                })
                .exec(txn)
                .await?;
                Ok(())
            })
        }
    }

    async fn effects(db: &DatabaseConnection) -> u64 {
        cursor::Entity::find()
            .filter(cursor::Column::Subscription.starts_with("effect:"))
            .count(db)
            .await
            .expect("count")
    }

    fn effects_processor(db: &DatabaseConnection) -> Processor {
        let mut config = ConsumerConfig::new("test", "producer");
        config.max_attempts = 2;
        config.initial_backoff = Duration::from_millis(1);
        Processor::new(db.clone(), config, Effects)
    }

    #[tokio::test]
    async fn a_batch_applies_each_event_once_and_moves_the_cursor_to_its_last() {
        let db = db().await;
        let processor = effects_processor(&db);
        let (first, second) = (event(1), event(2));
        // The same event twice in one batch, then the whole batch redelivered.
        let batch = [first.clone(), second.clone(), first.clone(), event(3)];
        processor.process_batch(&batch).await.expect("batch");
        assert_eq!(effects(&db).await, 3);
        assert_eq!(processor.position().await, Ok(3));
        processor.process_batch(&batch).await.expect("redelivery");
        assert_eq!(effects(&db).await, 3);
        assert_eq!(inbox::Entity::find().count(&db).await, Ok(3));
    }

    #[tokio::test]
    async fn a_failing_event_leaves_its_batch_to_be_applied_one_by_one() {
        let db = db().await;
        let processor = effects_processor(&db);
        let mut bad = event(2);
        bad.event_type = "test.Bad".into();
        processor
            .process_batch(&[event(1), bad.clone(), event(3)])
            .await
            .expect("batch");
        // The others applied exactly once (the batch's first try rolled back), the bad one
        // dead-lettered after its attempts, and the stream moved past all three.
        assert_eq!(effects(&db).await, 2);
        assert_eq!(processor.position().await, Ok(3));
        let letters = dead_letter::Entity::find().all(&db).await.expect("letters");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].event_id, bad.event_id);
    }

    #[test]
    fn a_connection_lost_under_a_statement_is_transient_and_a_refused_statement_is_not() {
        use sea_orm::{RuntimeErr, sqlx};
        use std::sync::Arc;
        let lost = HandlerError::Database(DbErr::Query(RuntimeErr::SqlxError(Arc::new(
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ))));
        assert!(lost.is_transient());
        let refused = HandlerError::Database(DbErr::Exec(RuntimeErr::SqlxError(Arc::new(
            sqlx::Error::Protocol("unexpected message".into()),
        ))));
        assert!(!refused.is_transient());
        assert!(
            HandlerError::Database(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout))
                .is_transient()
        );
    }

    #[test]
    fn a_dead_letter_never_shows_a_database_message() {
        let error = HandlerError::Database(DbErr::Custom(
            "UPDATE members SET points = 3 WHERE secret = 'x'".into(),
        ));
        let reason = error.public_reason();
        assert!(
            !reason.contains("UPDATE") && !reason.contains("secret"),
            "{reason}"
        );
        assert_eq!(
            HandlerError::Rejected("member is unknown".into()).public_reason(),
            "member is unknown"
        );
    }

    #[tokio::test]
    async fn an_event_that_keeps_failing_is_dead_lettered_and_the_stream_goes_on() {
        let db = db().await;
        let (processor, handler) = processor(&db, 100);
        let poison = event(7);
        assert_eq!(processor.process(&poison).await, Ok(Handled::DeadLettered));
        assert_eq!(handler.applied.load(Ordering::SeqCst), 0);
        assert_eq!(processor.position().await, Ok(7));
        let letters = dead_letter::Entity::find()
            .all(&db)
            .await
            .expect("dead letters");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].event_id, poison.event_id);
        assert_eq!(letters[0].attempts, 3);
        assert!(letters[0].error.contains("not yet"));
        // Not in the inbox: a redrive may still apply it.
        assert_eq!(inbox::Entity::find().count(&db).await, Ok(0));

        // Still failing: the dead letter stays, one attempt more.
        let (outcome, error) = outcome_of(
            processor
                .redrive(letters[0].clone())
                .await
                .expect("redrive"),
        );
        assert_eq!(outcome, crate::proto::events::v1::RedriveOutcome::Failed);
        assert!(error.contains("not yet"));
        let letter = dead_letter::Entity::find()
            .one(&db)
            .await
            .expect("row")
            .expect("kept");
        assert_eq!(letter.attempts, 4);

        // The cause is fixed: the redrive applies it once and removes the dead letter.
        handler.failures.store(0, Ordering::SeqCst);
        let (outcome, _) = outcome_of(processor.redrive(letter.clone()).await.expect("redrive"));
        assert_eq!(outcome, crate::proto::events::v1::RedriveOutcome::Applied);
        assert_eq!(handler.applied.load(Ordering::SeqCst), 1);
        assert_eq!(dead_letter::Entity::find().count(&db).await, Ok(0));
        let (outcome, _) = outcome_of(processor.redrive(letter).await.expect("redrive again"));
        assert_eq!(outcome, crate::proto::events::v1::RedriveOutcome::Duplicate);
        assert_eq!(handler.applied.load(Ordering::SeqCst), 1, "applied once");
    }
}
