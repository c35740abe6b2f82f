//! Retention: what a service keeps of its event tables, and for how long.
//!
//! Every table that grows with traffic has a bound: published outbox rows, inbox entries, dead
//! letters (and a service's own history tables, such as rental's saga steps) older than their
//! retention are deleted by a background task, a batch at a time so no transaction grows with
//! the backlog, and counted in `bookmesh_rows_pruned_total{table}`. Each replica runs it;
//! deletes are idempotent, so replicas pruning together only repeat each other's work.
//!
//! What the bounds mean for readers is in docs/reliability.md: a feed subscriber whose cursor
//! fell behind the outbox's retention is told so (OUT_OF_RANGE) instead of silently skipping
//! events, and the inbox keeps entries far longer than any redelivery can come.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::tables::{dead_letter, inbox, outbox};
use crate::readiness::Readiness;

/// Deletes rows of one table older than a cutoff, at most about `batch` of them per call;
/// returns how many it deleted.
pub type Prune = Arc<
    dyn Fn(DatabaseConnection, DateTime<Utc>, u64) -> BoxFuture<'static, Result<u64, DbErr>>
        + Send
        + Sync,
>;

/// One table the pruner keeps bounded.
#[derive(Clone)]
pub struct RetentionTarget {
    /// The table's name, the metric's label.
    pub table: &'static str,
    /// Rows older than this go.
    pub retention: Duration,
    /// Deletes a batch of them.
    pub prune: Prune,
}

impl std::fmt::Debug for RetentionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionTarget")
            .field("table", &self.table)
            .field("retention", &self.retention)
            .finish()
    }
}

impl RetentionTarget {
    /// `table` (entity `E`) loses every row whose `time` is older than `retention`.
    pub fn by_age<E: EntityTrait>(
        table: &'static str,
        retention: Duration,
        time: E::Column,
    ) -> Self {
        Self {
            table,
            retention,
            prune: Arc::new(move |db, cutoff, batch| {
                Box::pin(async move {
                    prune_older_than::<E>(&db, time, Condition::all(), cutoff, batch).await
                })
            }),
        }
    }
}

/// Deletes rows of `E` whose `time` is before `cutoff` and that match `keep_out` (rows it
/// must not touch are excluded there), the oldest first, about `batch` at a time: the batch
/// ends at the time of its `batch`-th oldest row, so one DELETE never grows with the backlog
/// and needs no LIMIT (which MariaDB does not allow in the subquery this would take).
pub async fn prune_older_than<E: EntityTrait>(
    db: &DatabaseConnection,
    time: E::Column,
    keep_out: Condition,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> Result<u64, DbErr> {
    let due = Condition::all().add(time.lt(cutoff)).add(keep_out);
    let edge: Option<DateTime<Utc>> = E::find()
        .select_only()
        .column(time)
        .filter(due.clone())
        .order_by_asc(time)
        .offset(batch.saturating_sub(1))
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    let due = match edge {
        Some(edge) => due.add(time.lte(edge)),
        None => due,
    };
    Ok(E::delete_many().filter(due).exec(db).await?.rows_affected)
}

/// The outbox: published rows older than `retention`, never the last published one (the
/// relay numbers the next row after it, so the feed's positions never start again).
pub(crate) fn outbox_target(retention: Duration) -> RetentionTarget {
    RetentionTarget {
        table: "outbox_events",
        retention,
        prune: Arc::new(|db, cutoff, batch| {
            Box::pin(async move {
                let last: Option<i64> = outbox::Entity::find()
                    .select_only()
                    .column_as(outbox::Column::FeedSequence.max(), "last")
                    .into_tuple::<Option<i64>>()
                    .one(&db)
                    .await?
                    .flatten();
                let Some(last) = last else {
                    return Ok(0);
                };
                let published_before_last = Condition::all()
                    .add(outbox::Column::FeedSequence.is_not_null())
                    .add(outbox::Column::FeedSequence.lt(last));
                prune_older_than::<outbox::Entity>(
                    &db,
                    outbox::Column::OccurredAt,
                    published_before_last,
                    cutoff,
                    batch,
                )
                .await
            })
        }),
    }
}

/// The inbox: entries of events applied longer ago than `retention`. A redelivery of one of
/// those would apply it again, so the retention must be far longer than any redelivery can
/// take (a consumer only reads after its cursor, and JetStream redelivers within its ack wait).
pub(crate) fn inbox_target(retention: Duration) -> RetentionTarget {
    RetentionTarget::by_age::<inbox::Entity>("inbox_events", retention, inbox::Column::ProcessedAt)
}

/// Dead letters nobody redrove within `retention`.
pub(crate) fn dead_letter_target(retention: Duration) -> RetentionTarget {
    RetentionTarget::by_age::<dead_letter::Entity>(
        "dead_letters",
        retention,
        dead_letter::Column::FailedAt,
    )
}

/// Prunes every target once, batch after batch until each is within its retention; returns
/// the rows deleted per table.
pub async fn prune_once(
    db: &DatabaseConnection,
    targets: &[RetentionTarget],
    batch: u64,
) -> Vec<(&'static str, u64)> {
    let mut pruned = Vec::new();
    for target in targets {
        let Ok(retention) = chrono::Duration::from_std(target.retention) else {
            continue;
        };
        let cutoff = Utc::now() - retention;
        let mut deleted = 0;
        loop {
            match (target.prune)(db.clone(), cutoff, batch).await {
                Ok(0) => break,
                Ok(n) => {
                    deleted += n;
                    crate::metrics::ROWS_PRUNED
                        .with_label_values(&[target.table])
                        .inc_by(n);
                    // Others' writes go first between batches.
                    tokio::task::yield_now().await;
                }
                Err(error) => {
                    // Another replica pruning, or a busy writer: the next round goes on.
                    if crate::db::is_contention(&error) {
                        tracing::debug!(table = target.table, %error, "pruning paused by contention");
                    } else {
                        tracing::warn!(table = target.table, %error, "pruning failed");
                    }
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(table = target.table, deleted, retention = ?target.retention, "pruned");
        }
        pruned.push((target.table, deleted));
    }
    pruned
}

/// Runs [`prune_once`] every `interval` once the database is ready, until the service stops.
pub(crate) async fn run_pruner(
    db: DatabaseConnection,
    targets: Vec<RetentionTarget>,
    interval: Duration,
    batch: u64,
    readiness: Readiness,
) {
    if targets.is_empty() || interval.is_zero() {
        return;
    }
    readiness.started().await;
    let mut stopping = readiness.stopping_signal();
    loop {
        prune_once(&db, &targets, batch).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {},
            _ = stopping.changed() => return,
        }
    }
}

/// Whether anything the feed would serve after `after` was pruned: the oldest published row
/// kept is further on than the next position.
pub(crate) async fn pruned_after(
    db: &DatabaseConnection,
    after: i64,
) -> Result<Option<i64>, DbErr> {
    let oldest: Option<i64> = outbox::Entity::find()
        .select_only()
        .column_as(outbox::Column::FeedSequence.min(), "oldest")
        .filter(outbox::Column::FeedSequence.is_not_null())
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten();
    Ok(oldest.filter(|oldest| *oldest > after + 1))
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ActiveValue::Set, Database, PaginatorTrait};
    use sea_orm_migration::MigratorTrait;
    use tonic::Code;

    use super::*;
    use crate::events::outbox::{Relay, append};
    use crate::events::{NewEvent, tables};
    use crate::proto::events::v1::SubscribeRequest;
    use crate::proto::events::v1::event_feed_service_server::EventFeedService as _;

    struct EventTables;

    impl MigratorTrait for EventTables {
        fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
            vec![
                Box::new(tables::CreateEventTables),
                Box::new(tables::IndexEventTables),
            ]
        }
    }

    async fn database() -> DatabaseConnection {
        let db = Database::connect("sqlite::memory:").await.expect("sqlite");
        EventTables::up(&db, None).await.expect("migrate");
        db
    }

    fn days_ago(days: i64) -> DateTime<Utc> {
        Utc::now() - chrono::Duration::days(days)
    }

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    #[tokio::test]
    async fn old_published_events_go_in_batches_but_never_the_last_one() {
        let db = database().await;
        let events = (0..5)
            .map(|i| NewEvent {
                event_type: "test.Event".into(),
                aggregate_id: format!("a{i}"),
                payload: vec![i],
            })
            .collect();
        append(&db, events).await.expect("append");
        let relay = Relay::new("test", db.clone());
        assert_eq!(relay.publish_pending().await, Ok(5));
        append(
            &db,
            vec![NewEvent {
                event_type: "test.Event".into(),
                aggregate_id: "unpublished".into(),
                payload: vec![],
            }],
        )
        .await
        .expect("append");
        outbox::Entity::update_many()
            .col_expr(outbox::Column::OccurredAt, Expr::value(days_ago(10)))
            .exec(&db)
            .await
            .expect("age them");
        let before = crate::metrics::ROWS_PRUNED
            .with_label_values(&["outbox_events"])
            .get();

        let pruned = prune_once(&db, &[outbox_target(WEEK)], 2).await;

        assert_eq!(pruned, vec![("outbox_events", 4)]);
        let left: Vec<Option<i64>> = outbox::Entity::find()
            .order_by_asc(outbox::Column::Id)
            .all(&db)
            .await
            .expect("rows")
            .into_iter()
            .map(|row| row.feed_sequence)
            .collect();
        assert_eq!(
            left,
            vec![Some(5), None],
            "the last published and the pending stay"
        );
        assert!(
            crate::metrics::ROWS_PRUNED
                .with_label_values(&["outbox_events"])
                .get()
                >= before + 4
        );
        // The relay goes on after 5, not from 1.
        assert_eq!(relay.publish_pending().await, Ok(1));
        assert_eq!(*relay.published().borrow(), 6);
        // A subscriber behind the pruned part is told; one at the edge, or new, is served.
        assert_eq!(pruned_after(&db, 2).await, Ok(Some(5)));
        assert_eq!(pruned_after(&db, 4).await, Ok(None));
        let feed = crate::events::feed::EventFeed::new(
            "test",
            db.clone(),
            relay.published(),
            crate::readiness::Readiness::new(),
            4,
        );
        let refused = feed
            .subscribe(tonic::Request::new(SubscribeRequest { after_sequence: 2 }))
            .await
            .err()
            .expect("pruned");
        assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
        for after in [0, 4] {
            assert!(
                feed.subscribe(tonic::Request::new(SubscribeRequest {
                    after_sequence: after
                }))
                .await
                .is_ok()
            );
        }
    }

    #[tokio::test]
    async fn old_inbox_entries_and_dead_letters_go_and_recent_ones_stay() {
        let db = database().await;
        for (id, days) in [("old", 10), ("new", 1)] {
            inbox::Entity::insert(inbox::ActiveModel {
                event_id: Set(id.into()),
                subscription: Set("s".into()),
                event_type: Set("t".into()),
                processed_at: Set(days_ago(days)),
            })
            .exec(&db)
            .await
            .expect("inbox");
            dead_letter::Entity::insert(dead_letter::ActiveModel {
                subscription: Set("s".into()),
                event_id: Set(id.into()),
                event_type: Set("t".into()),
                sequence: Set(1),
                envelope: Set(vec![]),
                error: Set("e".into()),
                attempts: Set(3),
                failed_at: Set(days_ago(days * 4)),
                ..Default::default()
            })
            .exec(&db)
            .await
            .expect("dead letter");
        }
        let pruned = prune_once(
            &db,
            &[inbox_target(WEEK), dead_letter_target(4 * WEEK)],
            1000,
        )
        .await;
        assert_eq!(pruned, vec![("inbox_events", 1), ("dead_letters", 1)]);
        assert_eq!(inbox::Entity::find().count(&db).await, Ok(1));
        let kept = dead_letter::Entity::find()
            .one(&db)
            .await
            .expect("query")
            .expect("row");
        assert_eq!(kept.event_id, "new");
    }
}
