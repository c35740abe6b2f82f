//! The book service: owns the catalogue (`bookmesh.book.v1.BookService`) in its own database,
//! reachable only through its gRPC API. It reserves and takes back copies for the rental
//! saga (`events`), publishing the outcome on its own feed.
//!
//! Run it with [`bookmesh::service::run`]; tests start it with
//! [`bookmesh::service::serve_until`].

mod api;
mod config;
pub mod domain;
mod error;
mod events;
pub mod store;

use bookmesh::config::ServiceArgs;
use bookmesh::proto::book::v1::book_service_server::BookServiceServer;
use bookmesh::server::ServeError;
use bookmesh::service::Parts;

pub use config::Config;

/// How RegisterBook parses its request (every field checked, every violation reported): the
/// fuzz target drives it with arbitrary messages.
pub use api::parse_details as parse_register_book;

impl bookmesh::service::Service for Config {
    const NAME: &'static str = "book";
    type Migrator = store::migration::Migrator;
    type Api = BookServiceServer<api::BookApi>;

    fn args(&self) -> &ServiceArgs {
        &self.service
    }

    fn build(self, parts: &mut Parts) -> Result<Self::Api, ServeError> {
        parts.publish_events();
        parts.honour_idempotency_keys(&["RegisterBook"]);
        parts.consume_events("rental", self.rental_endpoints, events::RentalEvents)?;
        let max_message_bytes = parts.max_message_bytes();
        Ok(
            BookServiceServer::new(api::BookApi::new(store::BookStore::new(parts.db())))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
    }
}
