//! Configuration of the member service, from flags and environment.

use bookmesh::config::ServiceArgs;
use clap::Parser;

/// member-service: the members of the library.
#[derive(Debug, Clone, Parser)]
#[command(version, about, mut_arg("listen", |arg| arg.default_value("0.0.0.0:50052")))]
pub struct Config {
    /// Rental service endpoints (comma-separated), whose event feed this service consumes.
    #[arg(
        long,
        env = "BOOKMESH_RENTAL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50053"
    )]
    pub rental_endpoints: Vec<String>,

    /// What every service takes.
    #[command(flatten)]
    pub service: ServiceArgs,
}

impl Config {
    /// Configuration for tests: the given database and rental feed, the rest at defaults.
    pub fn for_tests(database_url: impl Into<String>, rental_endpoint: impl Into<String>) -> Self {
        Self {
            rental_endpoints: vec![rental_endpoint.into()],
            service: ServiceArgs::for_tests(database_url),
        }
    }

    /// Configuration for tests of the member service alone: no rental feed (nothing listens on
    /// port 1).
    pub fn for_database(database_url: impl Into<String>) -> Self {
        Self::for_tests(database_url, "http://127.0.0.1:1")
    }
}
