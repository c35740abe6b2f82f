//! `bookmesh.events.v1.DeadLetterService`: an operator's view of the events a service gave up
//! on, and the way to apply one again once its cause is fixed.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tonic::{Request, Response, Status};

use super::consumer::{Handled, Processor};
use super::envelope::Event;
use super::tables::dead_letter;
use crate::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::proto::events::v1::dead_letter_service_server::{
    DeadLetterService, DeadLetterServiceServer,
};
use crate::proto::events::v1::{
    DeadLetter, ListDeadLettersRequest, ListDeadLettersResponse, RedriveDeadLetterRequest,
    RedriveDeadLetterResponse, RedriveOutcome,
};
use crate::status::{FieldViolations, database_error};

/// The dead-letter service a consuming service serves beside its own API.
pub(crate) type DeadLetterServer = DeadLetterServiceServer<DeadLetters>;

/// The dead letters of one service, with the processors of its subscriptions for redrives.
pub(crate) struct DeadLetters {
    db: DatabaseConnection,
    processors: HashMap<String, Arc<Processor>>,
}

impl DeadLetters {
    /// The dead letters in `db`, redriven through the processor of their subscription.
    pub(crate) fn new(
        db: DatabaseConnection,
        processors: impl IntoIterator<Item = Arc<Processor>>,
    ) -> Self {
        Self {
            db,
            processors: processors
                .into_iter()
                .map(|p| (p.subscription(), p))
                .collect(),
        }
    }
}

fn encode_token(last_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("dead-letter:{last_id}"))
}

fn decode_token(token: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    text.strip_prefix("dead-letter:")?.parse().ok()
}

fn message(row: dead_letter::Model) -> DeadLetter {
    DeadLetter {
        dead_letter_id: row.id,
        event: Event::decode(row.envelope.as_slice()).ok(),
        subscription: row.subscription,
        error: row.error,
        attempts: row.attempts,
        failed_at: Some(crate::proto::timestamp(row.failed_at)),
    }
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetters {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 || n as u64 > MAX_PAGE_SIZE => {
                violations.add(
                    "page_size",
                    format!("must be between 1 and {MAX_PAGE_SIZE}"),
                );
                DEFAULT_PAGE_SIZE
            }
            n => n as u64,
        };
        let after = if request.page_token.is_empty() {
            0
        } else {
            decode_token(&request.page_token).unwrap_or_else(|| {
                violations.add("page_token", "is not a token returned by this service");
                0
            })
        };
        violations.into_result()?;
        let mut rows = dead_letter::Entity::find()
            .filter(dead_letter::Column::Id.gt(after))
            .order_by_asc(dead_letter::Column::Id)
            .limit(size + 1)
            .all(&self.db)
            .await
            .map_err(|e| database_error(&e))?;
        let next_page_token = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last()
                .map(|row| encode_token(row.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: rows.into_iter().map(message).collect(),
            next_page_token,
        }))
    }

    async fn redrive_dead_letter(
        &self,
        request: Request<RedriveDeadLetterRequest>,
    ) -> Result<Response<RedriveDeadLetterResponse>, Status> {
        let id = request.into_inner().dead_letter_id;
        let row = dead_letter::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(|e| database_error(&e))?
            .ok_or_else(|| Status::not_found(format!("dead letter {id} not found")))?;
        let processor = self.processors.get(&row.subscription).ok_or_else(|| {
            Status::failed_precondition(format!(
                "this service no longer consumes {}",
                row.subscription
            ))
        })?;
        let (outcome, error) = outcome_of(
            processor
                .redrive(row)
                .await
                .map_err(|e| database_error(&e))?,
        );
        Ok(Response::new(RedriveDeadLetterResponse {
            outcome: outcome.into(),
            error,
        }))
    }
}

/// What a redrive did, as the API reports it: the outcome and, when it failed, why.
pub(crate) fn outcome_of(handled: Result<Handled, String>) -> (RedriveOutcome, String) {
    match handled {
        Ok(Handled::Applied) => (RedriveOutcome::Applied, String::new()),
        Ok(_) => (RedriveOutcome::Duplicate, String::new()),
        Err(error) => (RedriveOutcome::Failed, error),
    }
}
