//! Configuration of the book service, from flags and environment.

use std::net::SocketAddr;

use bookmesh::config::{DatabaseArgs, ServerArgs, mask_url_password};
use clap::Parser;

/// book-service: the books of the library.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BOOKMESH_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl Config {
    /// Configuration for tests: the given database, every other setting at its default.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: DatabaseArgs::url(database_url),
            server: ServerArgs::default(),
        }
    }

    pub fn database_url(&self) -> String {
        self.database.effective_url("book")
    }

    /// Logs the effective configuration with secrets masked.
    pub fn log(&self) {
        tracing::info!(
            listen = %self.listen,
            database = %mask_url_password(&self.database_url()),
            server = ?self.server,
            "book-service configuration"
        );
    }
}
