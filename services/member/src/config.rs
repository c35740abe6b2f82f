//! Configuration of the member service, from flags and environment.

use std::net::SocketAddr;

use bookmesh::config::{DatabaseArgs, EventArgs, ServerArgs, mask_url_password};
use clap::Parser;

/// member-service: the members of the library.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BOOKMESH_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,

    /// Rental service endpoints (comma-separated), whose event feed this service consumes.
    #[arg(
        long,
        env = "BOOKMESH_RENTAL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50053"
    )]
    pub rental_endpoints: Vec<String>,

    #[command(flatten)]
    pub events: EventArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl Config {
    /// Configuration for tests: the given database and rental feed, the rest at defaults.
    pub fn for_tests(database_url: impl Into<String>, rental_endpoint: impl Into<String>) -> Self {
        Self {
            rental_endpoints: vec![rental_endpoint.into()],
            ..Self::for_database(database_url)
        }
    }

    /// Configuration for tests: the given database, every other setting at its default.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        Self {
            // Nothing listens on port 1: no rental feed unless a test wires one (for_tests).
            rental_endpoints: vec!["http://127.0.0.1:1".into()],
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            events: EventArgs::default(),
            database: DatabaseArgs::url(database_url),
            server: ServerArgs::default(),
        }
    }

    pub fn database_url(&self) -> String {
        self.database.effective_url("member")
    }

    /// Logs the effective configuration with secrets masked.
    pub fn log(&self) {
        tracing::info!(
            listen = %self.listen,
            rental = ?self.rental_endpoints,
            events = ?self.events,
            database = %mask_url_password(&self.database_url()),
            server = ?self.server,
            "member-service configuration"
        );
    }
}
