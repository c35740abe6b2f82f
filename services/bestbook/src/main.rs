//! `bestbook-service`: parses its configuration and runs the bestbook service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bookmesh::service::main(bestbook_service::Config::parse()).await
}
