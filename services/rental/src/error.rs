//! Everything that can go wrong in the rental service, and its two mappings: to a gRPC status
//! for callers, to a handler error for the event consumer.

use bookmesh::events::consumer::HandlerError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::RuleViolation;

/// What can go wrong in the rental service.
#[derive(Debug, thiserror::Error)]
pub enum RentalError {
    #[error("member {0} has no rental card")]
    CardNotFound(uuid::Uuid),
    #[error("member {0} not found")]
    MemberNotFound(uuid::Uuid),
    #[error("book {0} not found")]
    BookNotFound(uuid::Uuid),
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
            RentalError::Rule(rule) => precondition_failed(rule.kind(), &rule.subject(), message),
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

impl From<RentalError> for HandlerError {
    fn from(error: RentalError) -> Self {
        match error {
            RentalError::Database(db) => HandlerError::Database(db),
            // Another transaction changed the card first: the event applies on fresh data.
            RentalError::Contended => HandlerError::Transient(error.to_string()),
            other => HandlerError::Rejected(other.to_string()),
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
