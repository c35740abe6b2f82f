//! The member service: owns the library's members (`bookmesh.member.v1.MemberService`) in its
//! own database, reachable only through its gRPC API. It keeps their points for the rental
//! sagas (`events`), publishing deductions on its own feed.
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
use bookmesh::proto::member::v1::member_service_server::MemberServiceServer;
use bookmesh::server::ServeError;
use bookmesh::service::Parts;

pub use config::Config;

impl bookmesh::service::Service for Config {
    const NAME: &'static str = "member";
    type Migrator = store::migration::Migrator;
    type Api = MemberServiceServer<api::MemberApi>;

    fn args(&self) -> &ServiceArgs {
        &self.service
    }

    fn build(self, parts: &mut Parts) -> Result<Self::Api, ServeError> {
        parts.publish_events();
        parts.honour_idempotency_keys(&["RegisterMember"]);
        parts.consume_events("rental", self.rental_endpoints, events::RentalEvents)?;
        let max_message_bytes = parts.max_message_bytes();
        Ok(
            MemberServiceServer::new(api::MemberApi::new(store::MemberStore::new(parts.db())))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
    }
}
