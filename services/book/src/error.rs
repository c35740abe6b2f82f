//! Everything that can go wrong in the book service, and the one mapping to gRPC statuses.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("book {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

impl From<BookError> for Status {
    fn from(error: BookError) -> Self {
        match error {
            BookError::NotFound(_) => Status::not_found(error.to_string()),
            BookError::Database(db) => bookmesh::status::database_error(&db),
        }
    }
}
