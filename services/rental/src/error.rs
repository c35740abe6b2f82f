//! Everything that can go wrong in the rental service, and the one mapping to gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::RuleViolation;

#[derive(Debug, thiserror::Error)]
pub enum RentalError {
    #[error("member {0} has no rental card")]
    CardNotFound(uuid::Uuid),
    #[error("member {0} not found")]
    MemberNotFound(uuid::Uuid),
    #[error("book {0} not found")]
    BookNotFound(uuid::Uuid),
    #[error("book {0} is not available")]
    BookUnavailable(uuid::Uuid),
    #[error(transparent)]
    Rule(#[from] RuleViolation),
    #[error("the card kept changing under concurrent requests; try again")]
    Contended,
    #[error("{service} service: {status}")]
    Upstream {
        service: &'static str,
        status: Status,
    },
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

impl From<RentalError> for Status {
    fn from(error: RentalError) -> Self {
        let message = error.to_string();
        match error {
            RentalError::CardNotFound(_)
            | RentalError::MemberNotFound(_)
            | RentalError::BookNotFound(_)
            | RentalError::Rule(RuleViolation::NotOnCard(_)) => Status::not_found(message),
            RentalError::Rule(RuleViolation::AlreadyOnCard(_)) => Status::already_exists(message),
            RentalError::BookUnavailable(book_id) => {
                precondition_failed("BOOK_UNAVAILABLE", &format!("books/{book_id}"), message)
            }
            RentalError::Rule(rule) => precondition_failed(rule.kind(), "rental-card", message),
            RentalError::Contended => Status::aborted(message),
            RentalError::Upstream { service, status }
                if status.code() == Code::DeadlineExceeded =>
            {
                Status::deadline_exceeded(format!(
                    "{service} service did not answer within the deadline"
                ))
            }
            RentalError::Upstream { service, status } => {
                tracing::warn!(service, %status, "upstream call failed");
                // The caller cannot act on an upstream's internals; it may retry.
                Status::unavailable(format!("{service} service unavailable, try again"))
            }
            RentalError::Database(db) => bookmesh::status::database_error(&db),
        }
    }
}

/// FAILED_PRECONDITION with a `google.rpc.PreconditionFailure` naming the broken rule, so a
/// client can branch on `type` instead of parsing the message.
fn precondition_failed(kind: &str, subject: &str, message: String) -> Status {
    Status::with_error_details(
        Code::FailedPrecondition,
        message.clone(),
        ErrorDetails::with_precondition_failure(vec![tonic_types::PreconditionViolation::new(
            kind, subject, message,
        )]),
    )
}
