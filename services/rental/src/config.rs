//! Configuration of the rental service, from flags and environment.

use bookmesh::client::UpstreamConfig;
use bookmesh::config::{ClientArgs, ServiceArgs};
use clap::Parser;

/// rental-service: rental cards, and the rules of renting and returning books.
#[derive(Debug, Clone, Parser)]
#[command(version, about, mut_arg("listen", |arg| arg.default_value("0.0.0.0:50053")))]
pub struct Config {
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

    /// How the rental service calls the member and book services.
    #[command(flatten)]
    pub client: ClientArgs,

    /// What every service takes.
    #[command(flatten)]
    pub service: ServiceArgs,
}

impl Config {
    /// Configuration for tests: the given database and upstreams, the rest at defaults.
    pub fn for_tests(
        database_url: impl Into<String>,
        member_endpoint: impl Into<String>,
        book_endpoint: impl Into<String>,
    ) -> Self {
        Self {
            member_endpoints: vec![member_endpoint.into()],
            book_endpoints: vec![book_endpoint.into()],
            client: ClientArgs::default(),
            service: ServiceArgs::for_tests(database_url),
        }
    }

    /// The member service, as the client stack calls it.
    pub fn member_upstream(&self) -> Result<UpstreamConfig, String> {
        UpstreamConfig::from_args(&self.client, "member", self.member_endpoints.clone())
    }

    /// The book service, as the client stack calls it.
    pub fn book_upstream(&self) -> Result<UpstreamConfig, String> {
        UpstreamConfig::from_args(&self.client, "book", self.book_endpoints.clone())
    }
}
