//! Configuration of the rental service, from flags and environment.

use bookmesh::client::UpstreamConfig;
use std::time::Duration;

use bookmesh::config::{ClientArgs, ServiceArgs, parse_duration};
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

    /// A saga step waiting longer than this on another service is stuck: reported in
    /// `bookmesh_saga_steps_stuck`, and a rental still PENDING is canceled (RentCanceled).
    /// Well above the event pipeline's lag under load, so only a service that is down or an
    /// event that was dead-lettered trips it.
    #[arg(long, env = "BOOKMESH_SAGA_STEP_TIMEOUT", value_parser = parse_duration, default_value = "5m")]
    pub saga_step_timeout: Duration,

    /// How often the rental service looks for saga steps past the timeout (0 turns the
    /// sweep off).
    #[arg(long, env = "BOOKMESH_SAGA_SWEEP_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub saga_sweep_interval: Duration,

    /// Most WatchRentalHistory streams this replica serves at once; one more is refused with
    /// RESOURCE_EXHAUSTED. Each costs a task and two indexed lookups every 500 ms.
    #[arg(long, env = "BOOKMESH_MAX_HISTORY_WATCHERS", default_value_t = 256)]
    pub max_history_watchers: usize,

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
            saga_step_timeout: Duration::from_secs(300),
            saga_sweep_interval: Duration::from_secs(30),
            max_history_watchers: 256,
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
