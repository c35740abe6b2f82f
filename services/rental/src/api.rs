//! The gRPC surface of the rental service: parse requests (collecting every field violation),
//! consult the member and book services, apply the card rules in one local transaction,
//! convert back to messages.

use bookmesh::paging::PageRequest;
use bookmesh::proto::rental::v1::{
    self as pb, ClearOverdueRequest, ClearOverdueResponse, GetRentalCardRequest,
    GetRentalCardResponse, MarkOverdueRequest, MarkOverdueResponse, RentBookRequest,
    RentBookResponse, ReturnBookRequest, ReturnBookResponse,
};
use bookmesh::status::FieldViolations;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{RentalCard, parse_uuid};
use crate::error::RentalError;
use crate::messages::{card_message, saga_messages};
use crate::store::RentalStore;
use crate::upstream::Upstreams;
use crate::watch::{END_BEFORE_DEADLINE, HistoryStream, MAX_LIFETIME, Watchers};

pub struct RentalApi {
    store: RentalStore,
    upstreams: Upstreams,
    watchers: Watchers,
}

impl RentalApi {
    pub fn new(store: RentalStore, upstreams: Upstreams, watchers: Watchers) -> Self {
        Self {
            store,
            upstreams,
            watchers,
        }
    }
}

/// Parses the `member_id` and `book_id` that most requests carry.
fn parse_member_and_book(member_id: &str, book_id: &str) -> Result<(Uuid, Uuid), Status> {
    let mut violations = FieldViolations::new();
    let member = violations.check("member_id", parse_uuid(member_id));
    let book = violations.check("book_id", parse_uuid(book_id));
    violations.finish(|| Some((member?, book?)))
}

#[tonic::async_trait]
impl pb::rental_service_server::RentalService for RentalApi {
    #[tracing::instrument(skip_all)]
    async fn get_rental_history(
        &self,
        request: Request<pb::GetRentalHistoryRequest>,
    ) -> Result<Response<pb::GetRentalHistoryResponse>, Status> {
        let mut violations = FieldViolations::new();
        let member_id = violations.check("member_id", parse_uuid(&request.get_ref().member_id));
        let member_id = violations.finish(|| member_id)?;
        let history = self
            .store
            .history(member_id)
            .await?
            .ok_or(RentalError::CardNotFound(member_id))?;
        Ok(Response::new(pb::GetRentalHistoryResponse {
            sagas: saga_messages(&history),
        }))
    }

    type WatchRentalHistoryStream = HistoryStream;

    #[tracing::instrument(skip_all)]
    async fn watch_rental_history(
        &self,
        request: Request<pb::WatchRentalHistoryRequest>,
    ) -> Result<Response<HistoryStream>, Status> {
        let mut violations = FieldViolations::new();
        let member_id = violations.check("member_id", parse_uuid(&request.get_ref().member_id));
        let member_id = violations.finish(|| member_id)?;
        // The caller's own deadline, not the server's request timeout (which bounds answering
        // a call, not a stream's life): a stream lasts until the deadline, at most
        // MAX_LIFETIME.
        // It ends a little before the deadline, so the caller sees the OK it was promised
        // rather than its own DEADLINE_EXCEEDED.
        let lifetime = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(bookmesh::deadline::parse_grpc_timeout)
            .map_or(MAX_LIFETIME, |timeout| {
                timeout.saturating_sub(END_BEFORE_DEADLINE)
            });
        Ok(Response::new(self.watchers.open(member_id, lifetime)?))
    }

    #[tracing::instrument(skip_all, fields(member_id, book_id))]
    async fn rent_book(
        &self,
        request: Request<RentBookRequest>,
    ) -> Result<Response<RentBookResponse>, Status> {
        let (member_id, book_id) =
            parse_member_and_book(&request.get_ref().member_id, &request.get_ref().book_id)?;
        tracing::Span::current()
            .record("member_id", tracing::field::display(member_id))
            .record("book_id", tracing::field::display(book_id));

        // Both checks are independent reads: ask both services at once. Their deadlines come
        // from this request's own (see bookmesh::deadline).
        let (member, book) = tokio::join!(
            self.upstreams.ensure_member_exists(member_id),
            self.upstreams.book(book_id),
        );
        member?;
        let book = book?;
        if !book.available {
            let card = self.store.card(member_id).await?;
            let card = card.unwrap_or_else(|| RentalCard::new(member_id));
            return Err(RentalError::Rule(card.refuse_unavailable(book_id)).into());
        }
        let (card, rented) = self
            .store
            .update(member_id, true, |card| {
                card.rent(book_id, book.title.clone(), bookmesh::db::now())
            })
            .await?;
        if let Some(item) = rented.item() {
            tracing::info!(item_id = %item.item_id, "book rented: item pending, ItemRented published");
        }
        Ok(Response::new(RentBookResponse {
            rental_card: Some(card_message(&card, &[])),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn return_book(
        &self,
        request: Request<ReturnBookRequest>,
    ) -> Result<Response<ReturnBookResponse>, Status> {
        let request = request.into_inner();
        let (member_id, book_id) = parse_member_and_book(&request.member_id, &request.book_id)?;
        let (card, returned) = self
            .store
            .update(member_id, false, |card| {
                card.return_book(book_id, bookmesh::db::now())
            })
            .await?;
        match returned.as_ref().and_then(|change| change.item()) {
            Some(item) => {
                tracing::info!(%member_id, %book_id, late_fee = item.late_fee, "book returned");
            }
            None => tracing::info!(%member_id, %book_id, "return repeated while pending"),
        }
        Ok(Response::new(ReturnBookResponse {
            rental_card: Some(card_message(&card, &[])),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn mark_overdue(
        &self,
        request: Request<MarkOverdueRequest>,
    ) -> Result<Response<MarkOverdueResponse>, Status> {
        let request = request.into_inner();
        let (member_id, book_id) = parse_member_and_book(&request.member_id, &request.book_id)?;
        let (card, _marked) = self
            .store
            .update(member_id, false, |card| {
                // A repeat that changes nothing (the book is overdue already) publishes no
                // second ItemOverdue: the member is told once.
                let before = card.clone();
                let change = card.mark_overdue(book_id, bookmesh::db::now())?;
                Ok((*card != before).then_some(change))
            })
            .await?;
        tracing::info!(%member_id, %book_id, "item marked overdue");
        Ok(Response::new(MarkOverdueResponse {
            rental_card: Some(card_message(&card, &[])),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn clear_overdue(
        &self,
        request: Request<ClearOverdueRequest>,
    ) -> Result<Response<ClearOverdueResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let member_id = violations.check("member_id", parse_uuid(&request.member_id));
        if request.points <= 0 {
            violations.add("points", "must be positive");
        }
        let member_id = violations.finish(|| member_id)?;
        let (card, _cleared) = self
            .store
            .update(member_id, false, |card| {
                card.clear_overdue(request.points, bookmesh::db::now())
            })
            .await?;
        tracing::info!(%member_id, points = request.points, "late fee cleared");
        Ok(Response::new(ClearOverdueResponse {
            rental_card: Some(card_message(&card, &[])),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_rental_card(
        &self,
        request: Request<GetRentalCardRequest>,
    ) -> Result<Response<GetRentalCardResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let member_id = violations.check("member_id", parse_uuid(&request.member_id));
        let page = PageRequest::parse(request.page_size, &request.page_token, &mut violations);
        let (member_id, page) = violations.finish(|| Some((member_id?, page?)))?;
        let mut found = self
            .store
            .card_page(member_id, &page)
            .await?
            .ok_or(RentalError::CardNotFound(member_id))?;
        // Show the card as of now (a book may have passed its due date since the last write).
        found.card.refresh(bookmesh::db::now());
        Ok(Response::new(GetRentalCardResponse {
            rental_card: Some(card_message(&found.card, &found.history)),
            next_page_token: found.next_page_token,
        }))
    }
}
