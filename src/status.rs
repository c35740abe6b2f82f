//! gRPC error conventions shared by every service: bad input becomes INVALID_ARGUMENT carrying a
//! `google.rpc.BadRequest` that lists every offending field, so clients can show all problems
//! at once instead of one per round trip.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Collects field violations while a request is parsed into domain values.
#[derive(Debug, Default)]
pub struct FieldViolations {
    violations: Vec<FieldViolation>,
}

impl FieldViolations {
    /// No violation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field` (a path such as `member_id` or `book.isbn`).
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations
            .push(FieldViolation::new(field.into(), description.into()));
    }

    /// Keeps the parsed value, or records why `field` is invalid.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, impl ToString>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(reason) => {
                self.add(field, reason.to_string());
                None
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok` when nothing was recorded, otherwise the INVALID_ARGUMENT status with every violation.
    pub fn into_result(self) -> Result<(), Status> {
        if self.violations.is_empty() {
            return Ok(());
        }
        let fields: Vec<&str> = self.violations.iter().map(|v| v.field.as_str()).collect();
        let message = format!("invalid request: check {}", fields.join(", "));
        Err(Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request(self.violations),
        ))
    }
}

impl FieldViolations {
    /// Builds the parsed request once every field parsed; `None` means violations were
    /// recorded. Call as `violations.finish(|| Some(Parsed { a: a?, b: b? }))`.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Status> {
        let built = build();
        self.into_result()?;
        built.ok_or_else(|| Status::internal("request parsed without violations but incomplete"))
    }
}

/// Maps a database failure to a status without leaking SQL to the caller: UNAVAILABLE when the
/// database cannot be reached (the client may retry elsewhere or later), INTERNAL otherwise.
/// The details go to the log.
pub fn database_error(error: &sea_orm::DbErr) -> Status {
    if database_unreachable(error) {
        tracing::warn!(%error, "database unavailable");
        Status::unavailable("database unavailable, try again")
    } else {
        tracing::error!(%error, "database error");
        Status::internal("internal error")
    }
}

/// Whether `error` says the database could not be reached, rather than that it refused the
/// statement: no connection to be had, or one that broke under the statement. Pooled
/// connections in steady use are not pinged before each statement (`db::connect_lazy`), so a
/// server that restarted since a connection's last use fails the next statement on it with an
/// I/O error: the server's absence, which a retry cures, not a bug. The one place that decides
/// it: calls answer UNAVAILABLE for it, consumers retry without counting towards dead letters.
/// (Here rather than beside `db::is_contention`: the status layer comes before the database
/// one.)
pub fn database_unreachable(error: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr, sqlx};
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(source))
        | DbErr::Query(RuntimeErr::SqlxError(source)) => matches!(
            &**source,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_under_a_statement_is_unavailable_and_a_refused_statement_internal() {
        use sea_orm::{DbErr, RuntimeErr, sqlx};
        use std::sync::Arc;
        let broken = DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        ))));
        assert_eq!(database_error(&broken).code(), tonic::Code::Unavailable);
        let refused = DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Protocol(
            "unexpected message".into(),
        ))));
        assert_eq!(database_error(&refused).code(), tonic::Code::Internal);
        let no_row = DbErr::RecordNotFound("book".into());
        assert_eq!(database_error(&no_row).code(), tonic::Code::Internal);
    }

    #[test]
    fn no_violations_is_ok() {
        assert!(FieldViolations::new().into_result().is_ok());
    }

    #[test]
    fn violations_become_bad_request_details() {
        let mut violations = FieldViolations::new();
        assert_eq!(violations.check("name", Ok::<_, String>(3)), Some(3));
        assert_eq!(violations.check::<u8>("email", Err("not an email")), None);
        violations.add("page_size", "must be at most 100");
        let status = violations
            .into_result()
            .expect_err("violations were recorded");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("email, page_size"));
        let bad_request = status
            .get_details_bad_request()
            .expect("BadRequest details attached");
        let fields: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "page_size"]);
    }
}
