//! The rental service's view of the member and book services: typed calls through the shared
//! client stack, with the caller's deadline passed on.

use std::time::Duration;

use bookmesh::client::{UpstreamConfig, UpstreamError, call_deadline, channel, request};
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::book::v1::{BookStatus, GetBookRequest};
use bookmesh::proto::member::v1::GetMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use tonic::Code;
use tonic::transport::Channel;
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
    member: MemberServiceClient<Channel>,
    member_config: UpstreamConfig,
    book: BookServiceClient<Channel>,
    book_config: UpstreamConfig,
}

impl Upstreams {
    pub fn new(member: &UpstreamConfig, book: &UpstreamConfig) -> Result<Self, UpstreamError> {
        Ok(Self {
            member: MemberServiceClient::new(channel(member)?),
            member_config: member.clone(),
            book: BookServiceClient::new(channel(book)?),
            book_config: book.clone(),
        })
    }

    /// Fails with `MemberNotFound` if the member service does not know the member.
    pub async fn ensure_member_exists(
        &self,
        member_id: Uuid,
        budget: Option<Duration>,
    ) -> Result<(), RentalError> {
        let call = request(
            GetMemberRequest {
                member_id: member_id.to_string(),
            },
            call_deadline(&self.member_config, budget),
        );
        match self.member.clone().get_member(call).await {
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
    pub async fn book(
        &self,
        book_id: Uuid,
        budget: Option<Duration>,
    ) -> Result<BookInfo, RentalError> {
        let call = request(
            GetBookRequest {
                book_id: book_id.to_string(),
            },
            call_deadline(&self.book_config, budget),
        );
        match self.book.clone().get_book(call).await {
            Ok(response) => {
                let book = response
                    .into_inner()
                    .book
                    .ok_or_else(|| RentalError::Upstream {
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
