//! The `book_stats` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "book_stats")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub book_id: String,
    pub title: String,
    pub rentals: i64,
    pub last_rented_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
