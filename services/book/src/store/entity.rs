//! The `books` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "books")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub title: String,
    pub author: String,
    pub isbn: String,
    pub publisher: String,
    pub published_on: Date,
    pub classification: String,
    pub location: String,
    /// `AVAILABLE` or `UNAVAILABLE`: text, so the column reads the same on every engine.
    pub status: String,
    pub created_at: DateTimeUtc,
    /// The rental item that reserved the copy while it is UNAVAILABLE (NULL for copies
    /// reserved before the column existed, or set UNAVAILABLE by hand).
    pub held_by: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
