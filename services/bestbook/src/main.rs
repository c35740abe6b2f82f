//! `bestbook-service`: parses its configuration and runs the bestbook service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bookmesh::service::run(bestbook_service::Config::parse()).await?;
    Ok(())
}
