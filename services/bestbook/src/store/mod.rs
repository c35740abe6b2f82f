//! The ranking's storage: one row per rented book.

pub mod entity;
pub mod migration;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryOrder,
    QuerySelect,
};

#[derive(Clone)]
pub struct StatsStore {
    db: DatabaseConnection,
}

impl StatsStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The `limit` most rented books, most rented first, then most recently rented.
    pub async fn best(&self, limit: u64) -> Result<Vec<entity::Model>, DbErr> {
        entity::Entity::find()
            .order_by_desc(entity::Column::Rentals)
            .order_by_desc(entity::Column::LastRentedAt)
            .order_by_asc(entity::Column::BookId)
            .limit(limit)
            .all(&self.db)
            .await
    }

    pub async fn get(&self, book_id: &str) -> Result<Option<entity::Model>, DbErr> {
        entity::Entity::find_by_id(book_id.to_owned())
            .one(&self.db)
            .await
    }
}

/// Counts one confirmed rental of `book_id` (an upsert, in the consumer's transaction).
pub async fn count_rental(
    db: &impl ConnectionTrait,
    book_id: &str,
    title: &str,
) -> Result<(), DbErr> {
    entity::Entity::insert(entity::ActiveModel {
        book_id: Set(book_id.to_owned()),
        title: Set(title.to_owned()),
        rentals: Set(1),
        last_rented_at: Set(bookmesh::db::now()),
    })
    .on_conflict(
        OnConflict::column(entity::Column::BookId)
            .value(
                entity::Column::Rentals,
                Expr::col((entity::Entity, entity::Column::Rentals)).add(1),
            )
            .update_columns([entity::Column::Title, entity::Column::LastRentedAt])
            .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}
