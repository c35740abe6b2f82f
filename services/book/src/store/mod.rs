//! Persistence of the catalogue: the only module that sees sea-orm.

pub mod entity;
pub mod migration;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use crate::domain::{
    Book, BookDetails, BookId, BookStatus, Isbn, SHORT_TEXT_CHARS, TITLE_CHARS, Text,
};
use crate::error::BookError;
use bookmesh::paging::PageRequest;

#[derive(Clone)]
pub struct BookStore {
    db: DatabaseConnection,
}

const AVAILABLE: &str = "AVAILABLE";
const UNAVAILABLE: &str = "UNAVAILABLE";

fn status_text(status: BookStatus) -> &'static str {
    match status {
        BookStatus::Available => AVAILABLE,
        BookStatus::Unavailable => UNAVAILABLE,
    }
}

impl BookStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn insert(&self, book: &Book) -> Result<(), BookError> {
        let details = &book.details;
        let row = entity::ActiveModel {
            id: Set(book.id.to_string()),
            title: Set(details.title.as_str().to_owned()),
            author: Set(details.author.as_str().to_owned()),
            isbn: Set(details.isbn.as_str().to_owned()),
            publisher: Set(details.publisher.as_str().to_owned()),
            published_on: Set(details.published_on),
            classification: Set(details.classification.as_str().to_owned()),
            location: Set(details.location.as_str().to_owned()),
            status: Set(status_text(book.status).to_owned()),
            created_at: Set(book.created_at),
            held_by: Set(None),
        };
        entity::Entity::insert(row).exec(&self.db).await?;
        Ok(())
    }

    pub async fn get(&self, id: BookId) -> Result<Book, BookError> {
        entity::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(into_domain)
            .transpose()?
            .ok_or_else(|| BookError::NotFound(id.to_string()))
    }

    /// Sets a copy's status by hand (operators and tests; the rental saga drives it through
    /// events). It overrides any rental's hold on the copy.
    pub async fn set_status(&self, id: BookId, status: BookStatus) -> Result<(), BookError> {
        let result = entity::Entity::update_many()
            .col_expr(entity::Column::Status, Expr::value(status_text(status)))
            .col_expr(entity::Column::HeldBy, Expr::value(Option::<String>::None))
            .filter(entity::Column::Id.eq(id.to_string()))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Err(BookError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// One page in identifier (= registration) order and the next page token.
    pub async fn list(&self, page: &PageRequest) -> Result<(Vec<Book>, String), BookError> {
        let mut query = entity::Entity::find().order_by_asc(entity::Column::Id);
        if let Some(after) = &page.after {
            query = query.filter(entity::Column::Id.gt(after.as_str()));
        }
        let mut rows = query.limit(page.fetch_limit()).all(&self.db).await?;
        let next_page_token = page.finish(&mut rows, |row| row.id.as_str());
        let books = rows
            .into_iter()
            .map(into_domain)
            .collect::<Result<_, _>>()?;
        Ok((books, next_page_token))
    }
}

/// Outcome of trying to reserve a copy for a rental.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Reserved,
    NotAvailable,
    NotFound,
}

/// Reserves the copy for rental item `item_id` inside the caller's transaction: AVAILABLE
/// becomes UNAVAILABLE in one conditional UPDATE, so two rentals racing for one copy cannot
/// both get it.
pub async fn reserve(
    db: &impl ConnectionTrait,
    id: &str,
    item_id: &str,
) -> Result<Reservation, BookError> {
    let updated = entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(UNAVAILABLE))
        .col_expr(entity::Column::HeldBy, Expr::value(item_id))
        .filter(entity::Column::Id.eq(id))
        .filter(entity::Column::Status.eq(AVAILABLE))
        .exec(db)
        .await?;
    if updated.rows_affected == 1 {
        return Ok(Reservation::Reserved);
    }
    let exists = entity::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .is_some();
    Ok(if exists {
        Reservation::NotAvailable
    } else {
        Reservation::NotFound
    })
}

/// Takes a rented copy back (UNAVAILABLE → AVAILABLE) inside the caller's transaction, in one
/// conditional UPDATE. `NotAvailable` here means the copy was not rented out.
pub async fn release(db: &impl ConnectionTrait, id: &str) -> Result<Reservation, BookError> {
    let updated = entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(AVAILABLE))
        .col_expr(entity::Column::HeldBy, Expr::value(Option::<String>::None))
        .filter(entity::Column::Id.eq(id))
        .filter(entity::Column::Status.eq(UNAVAILABLE))
        .exec(db)
        .await?;
    if updated.rows_affected == 1 {
        return Ok(Reservation::Reserved);
    }
    let exists = entity::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .is_some();
    Ok(if exists {
        Reservation::NotAvailable
    } else {
        Reservation::NotFound
    })
}

/// Frees the copy that rental item `item_id` reserved, if it still holds it (a rental the
/// rental service canceled after the book service had reserved the copy). Whether it did.
pub async fn release_hold(
    db: &impl ConnectionTrait,
    id: &str,
    item_id: &str,
) -> Result<bool, BookError> {
    let updated = entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(AVAILABLE))
        .col_expr(entity::Column::HeldBy, Expr::value(Option::<String>::None))
        .filter(entity::Column::Id.eq(id))
        .filter(entity::Column::Status.eq(UNAVAILABLE))
        .filter(entity::Column::HeldBy.eq(item_id))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Rows were validated on the way in; a row that no longer parses is corruption, reported as
/// an error rather than a panic.
fn into_domain(row: entity::Model) -> Result<Book, BookError> {
    let corrupt = |field: &str, reason: String| {
        sea_orm::DbErr::Custom(format!("book {} has an invalid {field}: {reason}", row.id))
    };
    let text = |field: &str, value: &str, max: usize| {
        Text::parse(value, max).map_err(|e| corrupt(field, e))
    };
    let status = match row.status.as_str() {
        AVAILABLE => BookStatus::Available,
        UNAVAILABLE => BookStatus::Unavailable,
        other => return Err(corrupt("status", other.to_owned()).into()),
    };
    Ok(Book {
        id: BookId::parse(&row.id).map_err(|e| corrupt("id", e))?,
        details: BookDetails {
            title: text("title", &row.title, TITLE_CHARS)?,
            author: text("author", &row.author, SHORT_TEXT_CHARS)?,
            isbn: Isbn::parse(&row.isbn).map_err(|e| corrupt("isbn", e))?,
            publisher: text("publisher", &row.publisher, SHORT_TEXT_CHARS)?,
            published_on: row.published_on,
            classification: text("classification", &row.classification, SHORT_TEXT_CHARS)?,
            location: text("location", &row.location, SHORT_TEXT_CHARS)?,
        },
        status,
        created_at: row.created_at,
    })
}
