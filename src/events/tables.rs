//! The event tables every service database carries: the outbox (events to publish, written in
//! the same transaction as the state change), consumer cursors, the inbox (event ids already
//! applied) and dead letters. One migration creates them all, included in each service's
//! migrator.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_integer_null, integer, string_len, text};

use crate::db::timestamp_column;

pub(crate) mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox_events")]
    pub(crate) struct Model {
        /// Insertion order.
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub event_id: String,
        pub event_type: String,
        pub aggregate_id: String,
        pub occurred_at: DateTimeUtc,
        /// The encoded payload message (the value of the envelope's `Any`).
        pub payload: Vec<u8>,
        pub traceparent: String,
        pub tracestate: String,
        /// Position on the feed, assigned by the relay after commit; `None` until published.
        #[sea_orm(unique)]
        pub feed_sequence: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod cursor {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consumer_cursors")]
    pub(crate) struct Model {
        /// `<consumer>:<producer>`, such as `book:rental`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub subscription: String,
        /// Feed sequence of the last event handled (applied, duplicate or dead-lettered).
        pub position: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod inbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "inbox_events")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        pub subscription: String,
        pub event_type: String,
        pub processed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod dead_letter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dead_letters")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub subscription: String,
        pub event_id: String,
        pub event_type: String,
        pub sequence: i64,
        /// The whole envelope, encoded, so the event can be redriven as it was.
        pub envelope: Vec<u8>,
        pub error: String,
        pub attempts: i32,
        pub failed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(DeriveIden)]
enum OutboxEvents {
    Table,
    Id,
    EventId,
    EventType,
    AggregateId,
    OccurredAt,
    Payload,
    Traceparent,
    Tracestate,
    FeedSequence,
}

#[derive(DeriveIden)]
enum ConsumerCursors {
    Table,
    Subscription,
    Position,
}

#[derive(DeriveIden)]
enum InboxEvents {
    Table,
    EventId,
    Subscription,
    EventType,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    Subscription,
    EventId,
    EventType,
    Sequence,
    Envelope,
    Error,
    Attempts,
    FailedAt,
}

/// Creates the event tables; every service's migrator lists it.
pub struct CreateEventTables;

impl MigrationName for CreateEventTables {
    fn name(&self) -> &str {
        "m0100_create_event_tables"
    }
}

// The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateEventTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(OutboxEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(OutboxEvents::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string_len(OutboxEvents::EventId, 36).unique_key())
                    .col(string_len(OutboxEvents::EventType, 200))
                    .col(string_len(OutboxEvents::AggregateId, 64))
                    .col(timestamp_column(backend, OutboxEvents::OccurredAt).not_null())
                    .col(ColumnDef::new(OutboxEvents::Payload).blob().not_null())
                    .col(string_len(OutboxEvents::Traceparent, 64).default(""))
                    .col(string_len(OutboxEvents::Tracestate, 512).default(""))
                    .col(big_integer_null(OutboxEvents::FeedSequence).unique_key())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ConsumerCursors::Table)
                    .if_not_exists()
                    .col(string_len(ConsumerCursors::Subscription, 100).primary_key())
                    .col(big_integer(ConsumerCursors::Position).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InboxEvents::Table)
                    .if_not_exists()
                    .col(string_len(InboxEvents::EventId, 36).primary_key())
                    .col(string_len(InboxEvents::Subscription, 100))
                    .col(string_len(InboxEvents::EventType, 200))
                    .col(timestamp_column(backend, InboxEvents::ProcessedAt).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DeadLetters::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(DeadLetters::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string_len(DeadLetters::Subscription, 100))
                    .col(string_len(DeadLetters::EventId, 36))
                    .col(string_len(DeadLetters::EventType, 200))
                    .col(big_integer(DeadLetters::Sequence))
                    .col(ColumnDef::new(DeadLetters::Envelope).blob().not_null())
                    .col(text(DeadLetters::Error))
                    .col(integer(DeadLetters::Attempts))
                    .col(timestamp_column(backend, DeadLetters::FailedAt).not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OutboxEvents::Table.into_iden(),
            ConsumerCursors::Table.into_iden(),
            InboxEvents::Table.into_iden(),
            DeadLetters::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Indexes the event tables' lookups: a saga's history reads the outbox by aggregate, and
/// retention deletes by age (outbox, inbox, dead letters). Every service's migrator lists it
/// after [`CreateEventTables`].
pub struct IndexEventTables;

impl MigrationName for IndexEventTables {
    fn name(&self) -> &str {
        "m0101_index_event_tables"
    }
}

/// The indexes [`IndexEventTables`] creates: name, table, column.
fn event_table_indexes() -> [(&'static str, DynIden, DynIden); 4] {
    [
        (
            "idx_outbox_events_aggregate",
            OutboxEvents::Table.into_iden(),
            OutboxEvents::AggregateId.into_iden(),
        ),
        (
            "idx_outbox_events_occurred_at",
            OutboxEvents::Table.into_iden(),
            OutboxEvents::OccurredAt.into_iden(),
        ),
        (
            "idx_inbox_events_processed_at",
            InboxEvents::Table.into_iden(),
            InboxEvents::ProcessedAt.into_iden(),
        ),
        (
            "idx_dead_letters_failed_at",
            DeadLetters::Table.into_iden(),
            DeadLetters::FailedAt.into_iden(),
        ),
    ]
}

// The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for IndexEventTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, column) in event_table_indexes() {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(table)
                        .col(column)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in event_table_indexes() {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
