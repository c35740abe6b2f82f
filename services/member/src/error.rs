//! Everything that can go wrong in the member service, and the one mapping to gRPC statuses.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("member {0} not found")]
    NotFound(String),
    #[error("a member with email {0} already exists")]
    EmailTaken(String),
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
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
