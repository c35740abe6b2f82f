//! Schema migrations of the member database, applied at start before the service reports
//! SERVING. Migrations are append-only: never edit one that has shipped.

use bookmesh::db::timestamp_column;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, string_len};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateMembers),
            Box::new(bookmesh::events::tables::CreateEventTables),
            Box::new(bookmesh::events::tables::IndexEventTables),
            Box::new(bookmesh::server::CreateIdempotencyKeys),
        ]
    }
}

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
    Name,
    Email,
    Points,
    CreatedAt,
}

struct CreateMembers;

impl MigrationName for CreateMembers {
    fn name(&self) -> &str {
        "m0001_create_members"
    }
}

// The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for CreateMembers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(Members::Table)
                    .if_not_exists()
                    // UUIDs as 36-character strings: portable across SQLite, PostgreSQL and MySQL.
                    .col(string_len(Members::Id, 36).primary_key())
                    .col(string_len(Members::Name, 100))
                    // Unique so that concurrent registrations with one email cannot both win.
                    .col(string_len(Members::Email, 254).unique_key())
                    .col(big_integer(Members::Points).default(0))
                    .col(timestamp_column(backend, Members::CreatedAt).not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Members::Table).to_owned())
            .await
    }
}
