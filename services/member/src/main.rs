//! `member-service`: parses its configuration and runs the member service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bookmesh::service::main(member_service::Config::parse()).await
}
