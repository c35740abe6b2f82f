//! Schema migrations of the rental database, applied at start before the service reports
//! SERVING. Migrations are append-only: never edit one that has shipped.

use bookmesh::db::timestamp_column;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, boolean, string_len};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateRentalCards),
            Box::new(bookmesh::events::tables::CreateEventTables),
            Box::new(AddCancelReason),
            Box::new(CreateSagaSteps),
            Box::new(AddLateFeeInPayment),
            Box::new(bookmesh::events::tables::IndexEventTables),
            Box::new(bookmesh::server::CreateIdempotencyKeys),
            Box::new(AddSagaDeadlines),
        ]
    }
}

#[derive(DeriveIden)]
enum RentalCards {
    Table,
    MemberId,
    Status,
    LateFee,
    LateFeeInPayment,
    LateFeeInPaymentSince,
    Version,
}

#[derive(DeriveIden)]
enum RentalItems {
    Table,
    ItemId,
    MemberId,
    BookId,
    Title,
    RentedAt,
    DueAt,
    Overdue,
    State,
    ReturnedAt,
    LateFee,
    CancelReason,
}

struct CreateRentalCards;

impl MigrationName for CreateRentalCards {
    fn name(&self) -> &str {
        "m0001_create_rental_cards"
    }
}

// The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateRentalCards {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(RentalCards::Table)
                    .if_not_exists()
                    .col(string_len(RentalCards::MemberId, 36).primary_key())
                    .col(string_len(RentalCards::Status, 16))
                    .col(big_integer(RentalCards::LateFee).default(0))
                    .col(big_integer(RentalCards::Version).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RentalItems::Table)
                    .if_not_exists()
                    .col(string_len(RentalItems::ItemId, 36).primary_key())
                    .col(string_len(RentalItems::MemberId, 36))
                    .col(string_len(RentalItems::BookId, 36))
                    .col(string_len(RentalItems::Title, 200))
                    .col(timestamp_column(backend, RentalItems::RentedAt).not_null())
                    .col(timestamp_column(backend, RentalItems::DueAt).not_null())
                    .col(boolean(RentalItems::Overdue).default(false))
                    .col(string_len(RentalItems::State, 16))
                    .col(timestamp_column(backend, RentalItems::ReturnedAt).null())
                    .col(big_integer(RentalItems::LateFee).default(0))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_rental_items_card")
                            .from(RentalItems::Table, RentalItems::MemberId)
                            .to(RentalCards::Table, RentalCards::MemberId),
                    )
                    .to_owned(),
            )
            .await?;
        // A card is always loaded with its items.
        manager
            .create_index(
                Index::create()
                    .name("idx_rental_items_member")
                    .table(RentalItems::Table)
                    .col(RentalItems::MemberId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RentalItems::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(RentalCards::Table).to_owned())
            .await
    }
}

struct AddCancelReason;

impl MigrationName for AddCancelReason {
    fn name(&self) -> &str {
        "m0002_add_cancel_reason"
    }
}

// The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for AddCancelReason {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RentalItems::Table)
                    .add_column(
                        ColumnDef::new(RentalItems::CancelReason)
                            .string_len(300)
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RentalItems::Table)
                    .drop_column(RentalItems::CancelReason)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum SagaSteps {
    Table,
    Id,
    MemberId,
    ItemId,
    EventType,
    EventId,
    Producer,
    At,
    Detail,
}

struct CreateSagaSteps;

impl MigrationName for CreateSagaSteps {
    fn name(&self) -> &str {
        "m0003_create_saga_steps"
    }
}

// The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateSagaSteps {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(SagaSteps::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(SagaSteps::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string_len(SagaSteps::MemberId, 36))
                    .col(string_len(SagaSteps::ItemId, 36))
                    .col(string_len(SagaSteps::EventType, 200))
                    .col(string_len(SagaSteps::EventId, 36))
                    .col(string_len(SagaSteps::Producer, 50))
                    .col(timestamp_column(backend, SagaSteps::At).not_null())
                    .col(string_len(SagaSteps::Detail, 300).default(""))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_saga_steps_member")
                    .table(SagaSteps::Table)
                    .col(SagaSteps::MemberId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SagaSteps::Table).to_owned())
            .await
    }
}

struct AddLateFeeInPayment;

impl MigrationName for AddLateFeeInPayment {
    fn name(&self) -> &str {
        "m0004_add_late_fee_in_payment"
    }
}

// The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for AddLateFeeInPayment {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RentalCards::Table)
                    .add_column(
                        ColumnDef::new(RentalCards::LateFeeInPayment)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RentalCards::Table)
                    .drop_column(RentalCards::LateFeeInPayment)
                    .to_owned(),
            )
            .await
    }
}

/// What saga deadlines and a bounded card need: when a payment began, and indexes to find
/// the steps waiting too long (by state and age) and a member's items by state (the books
/// held, without the history).
struct AddSagaDeadlines;

impl MigrationName for AddSagaDeadlines {
    fn name(&self) -> &str {
        "m0005_add_saga_deadlines"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for AddSagaDeadlines {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .alter_table(
                Table::alter()
                    .table(RentalCards::Table)
                    .add_column(
                        timestamp_column(backend, RentalCards::LateFeeInPaymentSince).null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rental_items_state_rented_at")
                    .table(RentalItems::Table)
                    .col(RentalItems::State)
                    .col(RentalItems::RentedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rental_items_member_state")
                    .table(RentalItems::Table)
                    .col(RentalItems::MemberId)
                    .col(RentalItems::State)
                    .col(RentalItems::ItemId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in [
            "idx_rental_items_member_state",
            "idx_rental_items_state_rented_at",
        ] {
            manager
                .drop_index(
                    Index::drop()
                        .name(index)
                        .table(RentalItems::Table)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(RentalCards::Table)
                    .drop_column(RentalCards::LateFeeInPaymentSince)
                    .to_owned(),
            )
            .await
    }
}
