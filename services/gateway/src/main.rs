//! `gateway-service`: parses its configuration and serves the JSON API until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gateway_service::main(gateway_service::Config::parse()).await
}
