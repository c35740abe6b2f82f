//! The rental service: owns rental cards (`bookmesh.rental.v1.RentalService`) in its own
//! database and consults the member and book services over gRPC.
//!
//! - `domain`: the card rules; each returns the [`domain::Change`] it made.
//! - `store`: loads and saves cards, with the events of each change (transactional outbox).
//! - `events`: what the rental service publishes (a change → its event).
//! - `saga`: what it consumes (the book and member services' answers).
//! - `history`: a member's sagas, step by step.
//! - `deadlines`: saga steps waiting too long are reported; rentals are given up.
//! - `upstream`: typed calls to the member and book services.
//! - `watch`: a member's history streamed as it changes (WatchRentalHistory).
//! - `api`: the gRPC surface; `messages`: state as protobuf messages; `error`: the one
//!   mapping to statuses.

mod api;
mod config;
mod deadlines;
pub mod domain;
mod error;
mod events;
mod history;
mod messages;
mod saga;
pub mod store;
mod upstream;
mod watch;

use bookmesh::config::ServiceArgs;
use bookmesh::proto::rental::v1::rental_service_server::RentalServiceServer;
use bookmesh::server::ServeError;
use bookmesh::service::Parts;

pub use config::Config;

impl bookmesh::service::Service for Config {
    const NAME: &'static str = "rental";
    type Migrator = store::migration::Migrator;
    type Api = RentalServiceServer<api::RentalApi>;

    fn args(&self) -> &ServiceArgs {
        &self.service
    }

    fn build(self, parts: &mut Parts) -> Result<Self::Api, ServeError> {
        let upstreams = upstream::Upstreams::new(
            self.member_upstream().map_err(ServeError::Config)?,
            self.book_upstream().map_err(ServeError::Config)?,
            parts.identity(),
        )?;
        let relay = parts.publish_events();
        parts.honour_idempotency_keys(&["RentBook", "ReturnBook", "ClearOverdue"]);
        parts.consume_events("book", self.book_endpoints, saga::BookEvents)?;
        parts.consume_events("member", self.member_endpoints, saga::MemberEvents)?;
        parts.retain(store::saga_steps_retention(parts.history_retention()));
        let max_message_bytes = parts.max_message_bytes();
        let store = store::RentalStore::new(parts.db(), relay);
        let (sweeper, timeout) = (store.clone(), self.saga_step_timeout);
        parts.run_periodically(self.saga_sweep_interval, move || {
            let store = sweeper.clone();
            async move { deadlines::sweep(&store, timeout).await }
        });
        let watchers = watch::Watchers::new(
            store.clone(),
            self.max_history_watchers,
            parts.stopping_signal(),
        );
        Ok(
            RentalServiceServer::new(api::RentalApi::new(store, upstreams, watchers))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
    }
}
