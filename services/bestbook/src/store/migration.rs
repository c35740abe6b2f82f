//! Schema of the ranking's database. Being a read model, it can also simply be deleted: it is
//! rebuilt from the rental feed.

use bookmesh::db::timestamp_column;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, string_len};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateBookStats),
            Box::new(bookmesh::events::tables::CreateEventTables),
            Box::new(bookmesh::events::tables::IndexEventTables),
        ]
    }
}

#[derive(DeriveIden)]
enum BookStats {
    Table,
    BookId,
    Title,
    Rentals,
    LastRentedAt,
}

struct CreateBookStats;

impl MigrationName for CreateBookStats {
    fn name(&self) -> &str {
        "m0001_create_book_stats"
    }
}

// The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateBookStats {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(BookStats::Table)
                    .if_not_exists()
                    .col(string_len(BookStats::BookId, 36).primary_key())
                    .col(string_len(BookStats::Title, 200))
                    .col(big_integer(BookStats::Rentals).default(0))
                    .col(timestamp_column(backend, BookStats::LastRentedAt).not_null())
                    .to_owned(),
            )
            .await?;
        // The ranking query walks this index.
        manager
            .create_index(
                Index::create()
                    .name("idx_book_stats_rank")
                    .table(BookStats::Table)
                    .col(BookStats::Rentals)
                    .col(BookStats::LastRentedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BookStats::Table).to_owned())
            .await
    }
}
