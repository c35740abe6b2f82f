//! Everything that can go wrong in the member service, and its two mappings: to a gRPC status
//! for callers, to a handler error for the event consumer.

use bookmesh::events::consumer::HandlerError;
use tonic::Status;

/// What can go wrong in the member service.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// No member has this id.
    #[error("member {0} not found")]
    NotFound(String),
    /// The email belongs to another member.
    #[error("a member with email {0} already exists")]
    EmailTaken(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

impl From<MemberError> for HandlerError {
    fn from(error: MemberError) -> Self {
        match error {
            MemberError::Database(db) => HandlerError::Database(db),
            other => HandlerError::Rejected(other.to_string()),
        }
    }
}

impl From<MemberError> for Status {
    fn from(error: MemberError) -> Self {
        match error {
            MemberError::NotFound(_) => Status::not_found(error.to_string()),
            MemberError::EmailTaken(_) => Status::already_exists(error.to_string()),
            MemberError::Database(db) => bookmesh::status::database_error(&db),
        }
    }
}
