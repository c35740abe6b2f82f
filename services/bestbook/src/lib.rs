//! The best-seller service (CQRS read model): projects the rental service's events into its
//! own ranking of confirmed rentals (`bookmesh.bestbook.v1.BestBookService`). The projection
//! is disposable: an empty database replays the rental feed from the start.

pub mod api;
pub mod config;
pub mod events;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use bookmesh::events::consumer::ConsumerConfig;
use bookmesh::proto::bestbook::v1::best_book_service_server::BestBookServiceServer;
use bookmesh::server::{EventServices, ServeError};
use tokio::net::TcpListener;

pub use config::Config;

/// Binds the configured address and serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), ServeError> {
    // Kept until the server stops, so pending spans are flushed on the way out.
    let _telemetry = bookmesh::telemetry::init("bestbook", config.server.log_format);
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
            let (consumer, processor) = bookmesh::events::start_consumer(
                db.clone(),
                ConsumerConfig::new("bestbook", "rental"),
                rental_endpoints,
                Arc::new(events::RentalEvents),
                readiness,
                &events,
            )?;
            Ok(bookmesh::server::App {
                events: EventServices {
                    feed: None,
                    dead_letters: Some(bookmesh::events::dead_letter_service(
                        db.clone(),
                        [processor],
                    )),
                },
                service: BestBookServiceServer::new(api::BestBookApi::new(store::StatsStore::new(
                    db,
                )))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
                tasks: vec![consumer],
            })
        },
    )
    .await
}
