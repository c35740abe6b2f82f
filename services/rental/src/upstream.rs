//! The rental service's view of the member and book services: typed calls through the shared
//! client stack (discovery, balancing, deadlines, retries, circuit breaker).

use bookmesh::client::{Idempotency, Upstream, UpstreamConfig, UpstreamError};
use bookmesh::identity::Identity;
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::book::v1::{BookStatus, GetBookRequest};
use bookmesh::proto::member::v1::GetMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use tonic::Code;
use uuid::Uuid;

use crate::error::RentalError;

/// What the rental service needs to know about a book before renting it.
#[derive(Debug, Clone)]
pub struct BookInfo {
    pub title: String,
    pub available: bool,
}

#[derive(Clone)]
pub struct Upstreams {
    pub member: Upstream,
    pub book: Upstream,
}

impl Upstreams {
    /// The member and book services, called as `identity`.
    pub fn new(
        member: UpstreamConfig,
        book: UpstreamConfig,
        identity: &Identity,
    ) -> Result<Self, UpstreamError> {
        Ok(Self {
            member: Upstream::new(member, identity)?,
            book: Upstream::new(book, identity)?,
        })
    }

    /// Fails with `MemberNotFound` if the member service does not know the member.
    pub async fn ensure_member_exists(&self, member_id: Uuid) -> Result<(), RentalError> {
        let request = GetMemberRequest {
            member_id: member_id.to_string(),
        };
        // GetMember is a read: safe to retry.
        let result = self
            .member
            .call(
                Idempotency::Idempotent,
                request,
                |channel, request| async move {
                    MemberServiceClient::new(channel).get_member(request).await
                },
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => {
                Err(RentalError::MemberNotFound(member_id))
            }
            Err(status) => Err(RentalError::Upstream {
                service: "member",
                status,
            }),
        }
    }

    /// The book's title and availability, or `BookNotFound`.
    pub async fn book(&self, book_id: Uuid) -> Result<BookInfo, RentalError> {
        let request = GetBookRequest {
            book_id: book_id.to_string(),
        };
        let result = self
            .book
            .call(
                Idempotency::Idempotent,
                request,
                |channel, request| async move {
                    BookServiceClient::new(channel).get_book(request).await
                },
            )
            .await;
        match result {
            Ok(response) => {
                let book = response.book.ok_or_else(|| RentalError::Upstream {
                    service: "book",
                    status: tonic::Status::internal("GetBook answered without a book"),
                })?;
                Ok(BookInfo {
                    available: book.status() == BookStatus::Available,
                    title: book.title,
                })
            }
            Err(status) if status.code() == Code::NotFound => {
                Err(RentalError::BookNotFound(book_id))
            }
            Err(status) => Err(RentalError::Upstream {
                service: "book",
                status,
            }),
        }
    }
}
