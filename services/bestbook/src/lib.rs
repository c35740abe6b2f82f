//! The best-seller service (CQRS read model): projects the rental service's events into its
//! own ranking of confirmed rentals (`bookmesh.bestbook.v1.BestBookService`). The projection
//! is disposable: an empty database replays the rental feed from the start.
//!
//! A read model has no rules of its own, so unlike the other services it has no `domain.rs`
//! and no `error.rs`: its API reads the store, its event handler counts.

mod api;
mod config;
mod events;
pub mod store;

use bookmesh::config::ServiceArgs;
use bookmesh::proto::bestbook::v1::best_book_service_server::BestBookServiceServer;
use bookmesh::server::ServeError;
use bookmesh::service::Parts;

pub use config::Config;

impl bookmesh::service::Service for Config {
    const NAME: &'static str = "bestbook";
    type Migrator = store::migration::Migrator;
    type Api = BestBookServiceServer<api::BestBookApi>;

    fn args(&self) -> &ServiceArgs {
        &self.service
    }

    fn build(self, parts: &mut Parts) -> Result<Self::Api, ServeError> {
        parts.consume_events("rental", self.rental_endpoints, events::RentalEvents)?;
        let max_message_bytes = parts.max_message_bytes();
        Ok(
            BestBookServiceServer::new(api::BestBookApi::new(store::StatsStore::new(parts.db())))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
    }
}
