//! Configuration of the rental service, from flags and environment.

use std::net::SocketAddr;

use bookmesh::client::UpstreamConfig;
use bookmesh::config::{ClientArgs, DatabaseArgs, EventArgs, ServerArgs, mask_url_password};
use clap::Parser;

/// rental-service: rental cards, and the rules of renting and returning books.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BOOKMESH_LISTEN", default_value = "0.0.0.0:50053")]
    pub listen: SocketAddr,

    /// Member service endpoints, comma-separated.
    #[arg(
        long,
        env = "BOOKMESH_MEMBER_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50052"
    )]
    pub member_endpoints: Vec<String>,

    /// Book service endpoints, comma-separated.
    #[arg(
        long,
        env = "BOOKMESH_BOOK_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub book_endpoints: Vec<String>,

    #[command(flatten)]
    pub client: ClientArgs,

    #[command(flatten)]
    pub events: EventArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl Config {
    /// Configuration for tests: the given database and upstreams, the rest at defaults.
    pub fn for_tests(
        database_url: impl Into<String>,
        member_endpoint: impl Into<String>,
        book_endpoint: impl Into<String>,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            member_endpoints: vec![member_endpoint.into()],
            book_endpoints: vec![book_endpoint.into()],
            client: ClientArgs::default(),
            events: EventArgs::default(),
            database: DatabaseArgs::url(database_url),
            server: ServerArgs::default(),
        }
    }

    pub fn database_url(&self) -> String {
        self.database.effective_url("rental")
    }

    pub fn member_upstream(&self) -> Result<UpstreamConfig, String> {
        self.client
            .upstream("member", self.member_endpoints.clone())
    }

    pub fn book_upstream(&self) -> Result<UpstreamConfig, String> {
        self.client.upstream("book", self.book_endpoints.clone())
    }

    /// Logs the effective configuration with secrets masked.
    pub fn log(&self) {
        tracing::info!(
            listen = %self.listen,
            events = ?self.events,
            database = %mask_url_password(&self.database_url()),
            member = ?self.member_endpoints,
            book = ?self.book_endpoints,
            client = ?self.client,
            server = ?self.server,
            "rental-service configuration"
        );
    }
}
