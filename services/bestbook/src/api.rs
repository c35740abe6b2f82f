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
        let mut violations = FieldViolations::new();
        // Canonical from here on (lower case, hyphenated): the read model stores ids as the
        // rental events spell them, and `0190F5C2-…` is the same book.
        let book_id = violations
            .check(
                "book_id",
                uuid::Uuid::parse_str(request.get_ref().book_id.trim())
                    .map_err(|_| "must be a UUID"),
            )
            .map(|id| id.to_string())
            .unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use bookmesh::proto::bestbook::v1::best_book_service_server::BestBookService as _;
    use bookmesh::testing::TestDatabase;
    use sea_orm_migration::MigratorTrait as _;

    use super::*;

    #[tokio::test]
    async fn a_book_id_in_upper_case_is_the_same_book() {
        let database = TestDatabase::fresh().await;
        let db = sea_orm::Database::connect(&database.url)
            .await
            .expect("connect");
        crate::store::migration::Migrator::up(&db, None)
            .await
            .expect("migrate");
        let book_id = uuid::Uuid::now_v7().to_string();
        crate::store::count_rental(&db, &book_id, "Dune")
            .await
            .expect("count");
        let api = BestBookApi::new(StatsStore::new(db));
        let stats = api
            .get_book_stats(Request::new(GetBookStatsRequest {
                book_id: book_id.to_uppercase(),
            }))
            .await
            .expect("found in any case")
            .into_inner()
            .book
            .expect("stats");
        assert_eq!(stats.book_id, book_id);
        assert_eq!(stats.rentals, 1);
    }
}
