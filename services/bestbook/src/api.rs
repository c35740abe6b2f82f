//! The gRPC surface of the best-seller service.

use bookmesh::proto::bestbook::v1::{
    self as pb, GetBestBooksRequest, GetBestBooksResponse, GetBookStatsRequest,
    GetBookStatsResponse,
};
use bookmesh::status::FieldViolations;
use tonic::{Request, Response, Status};

use crate::store::{StatsStore, entity};

/// Default and largest ranking length.
pub const DEFAULT_LIMIT: i32 = 10;
pub const MAX_LIMIT: i32 = 100;

pub struct BestBookApi {
    store: StatsStore,
}

impl BestBookApi {
    pub fn new(store: StatsStore) -> Self {
        Self { store }
    }
}

fn stats(row: entity::Model, rank: i32) -> pb::BookStats {
    pb::BookStats {
        book_id: row.book_id,
        title: row.title,
        rentals: row.rentals,
        rank,
    }
}

#[tonic::async_trait]
impl pb::best_book_service_server::BestBookService for BestBookApi {
    async fn get_best_books(
        &self,
        request: Request<GetBestBooksRequest>,
    ) -> Result<Response<GetBestBooksResponse>, Status> {
        let limit = match request.get_ref().limit {
            0 => DEFAULT_LIMIT,
            n => n,
        };
        let mut violations = FieldViolations::new();
        if !(1..=MAX_LIMIT).contains(&limit) {
            violations.add("limit", format!("must be between 1 and {MAX_LIMIT}"));
        }
        violations.into_result()?;
        let rows = self
            .store
            .best(limit as u64)
            .await
            .map_err(|e| bookmesh::status::database_error(&e))?;
        Ok(Response::new(GetBestBooksResponse {
            books: rows
                .into_iter()
                .zip(1..)
                .map(|(row, rank)| stats(row, rank))
                .collect(),
        }))
    }

    async fn get_book_stats(
        &self,
        request: Request<GetBookStatsRequest>,
    ) -> Result<Response<GetBookStatsResponse>, Status> {
        let book_id = request.into_inner().book_id;
        let mut violations = FieldViolations::new();
        if uuid::Uuid::parse_str(&book_id).is_err() {
            violations.add("book_id", "must be a UUID");
        }
        violations.into_result()?;
        let row = self
            .store
            .get(&book_id)
            .await
            .map_err(|e| bookmesh::status::database_error(&e))?
            .ok_or_else(|| Status::not_found(format!("book {book_id} was never rented")))?;
        Ok(Response::new(GetBookStatsResponse {
            book: Some(stats(row, 0)),
        }))
    }
}
