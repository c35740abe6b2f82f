//! `member-service`: parses its configuration and runs the member service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bookmesh::service::run(member_service::Config::parse()).await?;
    Ok(())
}
