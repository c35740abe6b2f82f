//! `bestbook-service`: parses its configuration and runs the best-seller service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bestbook_service::Config::parse();
    bestbook_service::run(config).await?;
    Ok(())
}
