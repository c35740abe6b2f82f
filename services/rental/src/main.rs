//! `rental-service`: parses its configuration and runs the rental service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bookmesh::service::main(rental_service::Config::parse()).await
}
