//! Schema migrations of the book database, applied at start before the service reports
//! SERVING. Migrations are append-only: never edit one that has shipped.

use bookmesh::db::timestamp_column;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{date, string_len};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateBooks),
            Box::new(bookmesh::events::tables::CreateEventTables),
            Box::new(bookmesh::events::tables::IndexEventTables),
            Box::new(bookmesh::server::CreateIdempotencyKeys),
            Box::new(AddHeldBy),
        ]
    }
}

#[derive(DeriveIden)]
enum Books {
    Table,
    Id,
    Title,
    Author,
    Isbn,
    Publisher,
    PublishedOn,
    Classification,
    Location,
    Status,
    CreatedAt,
    HeldBy,
}

struct CreateBooks;

impl MigrationName for CreateBooks {
    fn name(&self) -> &str {
        "m0001_create_books"
    }
}

// The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateBooks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(Books::Table)
                    .if_not_exists()
                    .col(string_len(Books::Id, 36).primary_key())
                    .col(string_len(Books::Title, 200))
                    .col(string_len(Books::Author, 100))
                    .col(string_len(Books::Isbn, 13))
                    .col(string_len(Books::Publisher, 100))
                    .col(date(Books::PublishedOn))
                    .col(string_len(Books::Classification, 100))
                    .col(string_len(Books::Location, 100))
                    .col(string_len(Books::Status, 16))
                    .col(timestamp_column(backend, Books::CreatedAt).not_null())
                    .to_owned(),
            )
            .await?;
        // Librarians look copies up by ISBN; several copies may share one, so not unique.
        manager
            .create_index(
                Index::create()
                    .name("idx_books_isbn")
                    .table(Books::Table)
                    .col(Books::Isbn)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Books::Table).to_owned())
            .await
    }
}

/// Which rental item holds a copy: a rental the rental service gave up (its saga timed out)
/// frees the copy only if that rental is the one that reserved it.
struct AddHeldBy;

impl MigrationName for AddHeldBy {
    fn name(&self) -> &str {
        "m0002_add_held_by"
    }
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for AddHeldBy {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Books::Table)
                    .add_column(ColumnDef::new(Books::HeldBy).string_len(36).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Books::Table)
                    .drop_column(Books::HeldBy)
                    .to_owned(),
            )
            .await
    }
}
