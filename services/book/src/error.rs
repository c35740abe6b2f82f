//! Everything that can go wrong in the book service, and its two mappings: to a gRPC status
//! for callers, to a handler error for the event consumer.

use bookmesh::events::consumer::HandlerError;
use tonic::Status;

/// What can go wrong in the book service.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// No book has this id.
    #[error("book {0} not found")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

impl From<BookError> for HandlerError {
    fn from(error: BookError) -> Self {
        match error {
            BookError::Database(db) => HandlerError::Database(db),
            other => HandlerError::Rejected(other.to_string()),
        }
    }
}

impl From<BookError> for Status {
    fn from(error: BookError) -> Self {
        match error {
            BookError::NotFound(_) => Status::not_found(error.to_string()),
            BookError::Database(db) => bookmesh::status::database_error(&db),
        }
    }
}
