//! The member service: owns the library's members (`bookmesh.member.v1.MemberService`) in its
//! own database, reachable only through its gRPC API.

pub mod api;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod store;

use std::future::Future;

use bookmesh::proto::member::v1::member_service_server::MemberServiceServer;
use std::sync::Arc;

use bookmesh::events::consumer::ConsumerConfig;
use bookmesh::server::{EventServices, ServeError};
use tokio::net::TcpListener;

pub use config::Config;

/// Binds the configured address and serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), ServeError> {
    // Kept until the server stops, so pending spans are flushed on the way out.
    let _telemetry = bookmesh::telemetry::init("member", config.server.log_format);
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
    let max_message_bytes = config.server.max_message_bytes;
    let events = config.events.clone();
    let rental_endpoints = config.rental_endpoints.clone();
    bookmesh::server::serve_with_database::<store::migration::Migrator, _>(
        &config.server,
        &config.database_url(),
        listener,
        shutdown,
        |db, readiness| {
            let (relay, feed, relay_task) =
                bookmesh::events::start_producer("member", db.clone(), readiness, &events);
            let db_for_dlq = db.clone();
            let (consumer, processor) = bookmesh::events::start_consumer(
                db.clone(),
                ConsumerConfig::new("member", "rental"),
                rental_endpoints,
                Arc::new(events::RentalEvents { relay }),
                readiness,
                &events,
            )?;
            Ok(bookmesh::server::App {
                service: MemberServiceServer::new(api::MemberApi::new(store::MemberStore::new(db)))
                    .max_decoding_message_size(max_message_bytes)
                    .max_encoding_message_size(max_message_bytes),
                events: EventServices {
                    feed: Some(feed),
                    dead_letters: Some(bookmesh::events::dead_letter_service(
                        db_for_dlq,
                        [processor],
                    )),
                },
                tasks: vec![relay_task, consumer],
            })
        },
    )
    .await
}
