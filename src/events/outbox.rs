//! Writing events in the state change's transaction, and publishing them after commit.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use tokio::sync::{Notify, watch};

use super::envelope::{Event, NewEvent, type_url};
use super::tables::outbox;

/// Appends events to the outbox. Call it with the transaction of the state change: they commit
/// or roll back together.
pub async fn append(db: &impl ConnectionTrait, events: Vec<NewEvent>) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let now = crate::db::now();
    let rows = events.into_iter().map(|event| outbox::ActiveModel {
        event_id: Set(uuid::Uuid::now_v7().to_string()),
        event_type: Set(event.event_type),
        aggregate_id: Set(event.aggregate_id),
        occurred_at: Set(now),
        payload: Set(event.payload),
        // The span of the transaction that produced the event: its consumers continue it.
        traceparent: Set(crate::trace_context::current()
            .map(|trace| trace.to_traceparent())
            .unwrap_or_else(crate::trace_context::next_traceparent)),
        tracestate: Set(String::new()),
        feed_sequence: Set(None),
        ..Default::default()
    });
    outbox::Entity::insert_many(rows).exec(db).await?;
    Ok(())
}

/// Publishes committed outbox rows onto the producer's feed: rows without a feed position get
/// the next positions, in insertion order. Events of one aggregate are inserted in the order
/// their (conflicting, so serialised) transactions committed, so they keep their order.
///
/// Runs as one task per process. Several replicas may race: the unique index on the position
/// lets one win and the other retry.
#[derive(Clone)]
pub struct Relay {
    producer: &'static str,
    db: DatabaseConnection,
    wake: Arc<Notify>,
    published: watch::Sender<i64>,
}

impl Relay {
    /// The relay of `producer`'s outbox in `db`; [`Relay::run`] starts it.
    pub fn new(producer: &'static str, db: DatabaseConnection) -> Self {
        Self {
            producer,
            db,
            wake: Arc::new(Notify::new()),
            published: watch::Sender::new(0),
        }
    }

    /// The producing service's name.
    pub fn producer(&self) -> &'static str {
        self.producer
    }

    /// The database whose outbox this relay publishes.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Asks the relay to look for new rows now (after a commit that appended events).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The highest published position, updated as the relay publishes.
    pub fn published(&self) -> watch::Receiver<i64> {
        self.published.subscribe()
    }

    /// Publishes what is pending; returns how many rows it published.
    pub async fn publish_pending(&self) -> Result<usize, DbErr> {
        if crate::faults::database_outage() {
            return Err(DbErr::Custom("fault injected: database outage".to_owned()));
        }
        // Look before taking the writer's turn: most polls find nothing, and they should not
        // queue behind (or hold up) the writers.
        let nothing_pending = outbox::Entity::find()
            .filter(outbox::Column::FeedSequence.is_null())
            .one(&self.db)
            .await?
            .is_none();
        if nothing_pending {
            return Ok(0);
        }
        let (txn, _turn) = crate::db::begin_write(&self.db, crate::db::Writer::Relay).await?;
        let pending = pending_rows(&txn).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let last = last_published(&txn).await?;
        let (published, last) = self.assign_positions(&txn, &pending, last).await?;
        txn.commit().await?;
        self.published.send_if_modified(|known| {
            let newer = last > *known;
            *known = (*known).max(last);
            newer
        });
        Ok(published)
    }

    /// Gives `pending` rows the positions after `last`, in order, and returns how many it
    /// published and the last position given. A position is used only by a row this relay
    /// actually published: another replica's relay may have published some of `pending` since
    /// they were read (its update wins the row; ours then matches nothing), and skipping a
    /// position for those would leave a gap in the feed. Two relays that read the same `last`
    /// collide on the unique position instead: one fails, rolls back and tries again.
    async fn assign_positions(
        &self,
        txn: &impl ConnectionTrait,
        pending: &[outbox::Model],
        mut last: i64,
    ) -> Result<(usize, i64), DbErr> {
        let mut published = 0;
        for row in pending {
            let position = last + 1;
            // A producer span per published event, in the event's trace.
            let span = tracing::info_span!(
                "publish",
                otel.name = %format!("{} publish", self.producer),
                otel.kind = "producer",
                messaging.system = "bookmesh",
                messaging.destination.name = self.producer,
                messaging.message.id = %row.event_id,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            crate::telemetry::enter_trace(
                &span,
                crate::trace_context::TraceContext::parse(&row.traceparent),
            );
            let updated = outbox::Entity::update_many()
                .col_expr(outbox::Column::FeedSequence, Expr::value(position))
                .filter(outbox::Column::Id.eq(row.id))
                .filter(outbox::Column::FeedSequence.is_null())
                .exec(txn)
                .await?;
            if updated.rows_affected == 1 {
                last = position;
                published += 1;
            }
        }
        Ok((published, last))
    }

    /// Exports the backlog: unpublished rows and the age of the oldest.
    async fn record_backlog(&self) -> Result<(), DbErr> {
        let (count, oldest): (i64, Option<chrono::DateTime<chrono::Utc>>) = outbox::Entity::find()
            .select_only()
            .column_as(outbox::Column::Id.count(), "count")
            .column_as(outbox::Column::OccurredAt.min(), "oldest")
            .filter(outbox::Column::FeedSequence.is_null())
            .into_tuple()
            .one(&self.db)
            .await?
            .unwrap_or((0, None));
        crate::metrics::OUTBOX_BACKLOG
            .with_label_values(&[self.producer])
            .set(count);
        let age = oldest.map_or(0.0, |oldest| {
            (chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0
        });
        crate::metrics::OUTBOX_OLDEST_AGE
            .with_label_values(&[self.producer])
            .set(age);
        Ok(())
    }

    /// Runs forever: publishes whenever woken, and every `poll` anyway (rows written by other
    /// replicas do not wake this one). Failures are logged and retried with backoff.
    pub async fn run(self, poll: Duration) {
        let mut backoff = Duration::from_millis(50);
        if let Ok(last) = last_published(&self.db).await {
            self.published.send_replace(last);
        }
        loop {
            let published = self.publish_pending().await;
            if let Err(error) = self.record_backlog().await {
                tracing::debug!(%error, "cannot measure the outbox backlog");
            }
            match published {
                Ok(n) if n > 0 => {
                    backoff = Duration::from_millis(50);
                    continue;
                }
                Ok(_) => backoff = Duration::from_millis(50),
                Err(error) => {
                    // SQLite's single writer makes lock contention routine here.
                    if crate::db::is_contention(&error) {
                        tracing::debug!(%error, retry_in = ?backoff, "outbox relay waiting for the writer lock");
                    } else {
                        tracing::warn!(%error, retry_in = ?backoff, "outbox relay failed; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            tokio::select! {
                () = self.wake.notified() => {},
                () = tokio::time::sleep(poll) => {},
            }
        }
    }
}

/// Rows not published yet, oldest first, a batch at a time.
async fn pending_rows(db: &impl ConnectionTrait) -> Result<Vec<outbox::Model>, DbErr> {
    outbox::Entity::find()
        .filter(outbox::Column::FeedSequence.is_null())
        .order_by_asc(outbox::Column::Id)
        .limit(500)
        .all(db)
        .await
}

/// The highest position published so far (0 for none).
async fn last_published(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    Ok(outbox::Entity::find()
        .select_only()
        .column_as(outbox::Column::FeedSequence.max(), "last")
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten()
        .unwrap_or(0))
}

/// The envelope of a published outbox row.
pub(crate) fn envelope(producer: &str, row: outbox::Model) -> Event {
    Event {
        sequence: row.feed_sequence.unwrap_or_default(),
        event_id: row.event_id,
        producer: producer.to_owned(),
        aggregate_id: row.aggregate_id,
        occurred_at: Some(crate::proto::timestamp(row.occurred_at)),
        traceparent: row.traceparent,
        tracestate: row.tracestate,
        payload: Some(prost_types::Any {
            type_url: type_url(&row.event_type),
            value: row.payload,
        }),
        event_type: row.event_type,
    }
}

/// Every event `producer` wrote about `aggregate_id`, published or not yet, oldest first (a
/// saga's history as its producer sees it).
pub async fn events_about(
    db: &impl ConnectionTrait,
    producer: &str,
    aggregate_id: &str,
) -> Result<Vec<Event>, DbErr> {
    let rows = outbox::Entity::find()
        .filter(outbox::Column::AggregateId.eq(aggregate_id))
        .order_by_asc(outbox::Column::Id)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| envelope(producer, row))
        .collect())
}

#[cfg(test)]
mod tests {
    use sea_orm::{Database, TransactionTrait};
    use sea_orm_migration::MigratorTrait;

    use super::*;

    struct EventTables;

    impl sea_orm_migration::MigratorTrait for EventTables {
        fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
            vec![
                Box::new(super::super::tables::CreateEventTables),
                Box::new(super::super::tables::IndexEventTables),
            ]
        }
    }

    fn new_event(aggregate: &str) -> NewEvent {
        NewEvent {
            event_type: "test.Event".into(),
            aggregate_id: aggregate.into(),
            payload: vec![1, 2, 3],
        }
    }

    #[tokio::test]
    async fn rows_another_relay_published_meanwhile_leave_no_gap() {
        let db = Database::connect("sqlite::memory:").await.expect("sqlite");
        EventTables::up(&db, None).await.expect("migrate");
        append(&db, vec![new_event("a"), new_event("b")])
            .await
            .expect("append");
        let ours = Relay::new("test", db.clone());
        let rival = Relay::new("test", db.clone());
        // Ours reads the pending rows; the rival publishes them before ours reads the last
        // position (PostgreSQL's READ COMMITTED lets each query see the latest commit).
        let stale = pending_rows(&db).await.expect("pending");
        append(&db, vec![new_event("c")]).await.expect("append");
        let mut stale_and_new = stale;
        stale_and_new.extend(
            pending_rows(&db)
                .await
                .expect("pending")
                .into_iter()
                .skip(2),
        );
        assert_eq!(rival.publish_pending().await, Ok(3));
        append(&db, vec![new_event("d")]).await.expect("append");
        stale_and_new.extend(pending_rows(&db).await.expect("pending"));
        let last = last_published(&db).await.expect("last");
        assert_eq!(last, 3);
        let txn = db.begin().await.expect("begin");
        let (published, last) = ours
            .assign_positions(&txn, &stale_and_new, last)
            .await
            .expect("assign");
        txn.commit().await.expect("commit");
        assert_eq!((published, last), (1, 4), "only d, at 4");
        let positions: Vec<Option<i64>> = outbox::Entity::find()
            .order_by_asc(outbox::Column::Id)
            .all(&db)
            .await
            .expect("rows")
            .into_iter()
            .map(|row| row.feed_sequence)
            .collect();
        assert_eq!(positions, vec![Some(1), Some(2), Some(3), Some(4)]);
    }

    #[tokio::test]
    async fn only_committed_events_are_published_in_order_without_gaps() {
        let db = Database::connect("sqlite::memory:").await.expect("sqlite");
        EventTables::up(&db, None).await.expect("migrate");
        let relay = Relay::new("test", db.clone());

        let committed = db.begin().await.expect("begin");
        append(&committed, vec![new_event("a"), new_event("b")])
            .await
            .expect("append");
        committed.commit().await.expect("commit");
        let rolled_back = db.begin().await.expect("begin");
        append(&rolled_back, vec![new_event("ghost")])
            .await
            .expect("append");
        rolled_back.rollback().await.expect("rollback");
        append(&db, vec![new_event("c")]).await.expect("append");

        assert_eq!(relay.publish_pending().await, Ok(3));
        assert_eq!(relay.publish_pending().await, Ok(0), "published once");
        assert_eq!(*relay.published().borrow(), 3);
        let rows = outbox::Entity::find()
            .order_by_asc(outbox::Column::FeedSequence)
            .all(&db)
            .await
            .expect("rows");
        let published: Vec<(Option<i64>, &str)> = rows
            .iter()
            .map(|row| (row.feed_sequence, row.aggregate_id.as_str()))
            .collect();
        assert_eq!(published, [(Some(1), "a"), (Some(2), "b"), (Some(3), "c")]);
    }
}
