//! The rental service: owns rental cards (`bookmesh.rental.v1.RentalService`) in its own
//! database and consults the member and book services over gRPC.

pub mod api;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod store;
pub mod upstream;

use std::future::Future;

use bookmesh::proto::rental::v1::rental_service_server::RentalServiceServer;
use std::sync::Arc;

use bookmesh::events::consumer::ConsumerConfig;
use bookmesh::server::{EventServices, ServeError};
use tokio::net::TcpListener;

pub use config::Config;

/// Binds the configured address and serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), ServeError> {
    // Kept until the server stops, so pending spans are flushed on the way out.
    let _telemetry = bookmesh::telemetry::init("rental", config.server.log_format);
    config.log();
    let listener = bookmesh::server::bind(config.listen).await?;
    serve(config, listener).await
}

/// Serves on `listener` until SIGINT or SIGTERM.
pub async fn serve(config: Config, listener: TcpListener) -> Result<(), ServeError> {
    serve_until(config, listener, bookmesh::server::shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` completes, then drains in-flight calls.
pub async fn serve_until(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let invalid = |reason: String| ServeError::Config(reason);
    let upstreams = upstream::Upstreams::new(
        config.member_upstream().map_err(invalid)?,
        config.book_upstream().map_err(invalid)?,
    )?;
    let max_message_bytes = config.server.max_message_bytes;
    let events = config.events.clone();
    let book_endpoints = config.book_endpoints.clone();
    let member_endpoints = config.member_endpoints.clone();
    bookmesh::server::serve_with_database::<store::migration::Migrator, _>(
        &config.server,
        &config.database_url(),
        listener,
        shutdown,
        |db, readiness| {
            let (relay, feed, relay_task) =
                bookmesh::events::start_producer("rental", db.clone(), readiness, &events);
            let (consumer, book_processor) = bookmesh::events::start_consumer(
                db.clone(),
                ConsumerConfig::new("rental", "book"),
                book_endpoints,
                Arc::new(events::BookEvents {
                    relay: relay.clone(),
                }),
                readiness,
                &events,
            )?;
            let (member_consumer, member_processor) = bookmesh::events::start_consumer(
                db.clone(),
                ConsumerConfig::new("rental", "member"),
                member_endpoints,
                Arc::new(events::MemberEvents),
                readiness,
                &events,
            )?;
            let dead_letters = bookmesh::events::dead_letter_service(
                db.clone(),
                [book_processor, member_processor],
            );
            let service = RentalServiceServer::new(api::RentalApi::new(
                store::RentalStore::new(db),
                upstreams,
                relay,
            ))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
            Ok(bookmesh::server::App {
                service,
                events: EventServices {
                    feed: Some(feed),
                    dead_letters: Some(dead_letters),
                },
                tasks: vec![relay_task, consumer, member_consumer],
            })
        },
    )
    .await
}
