//! `member-service`: parses its configuration and runs the member service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = member_service::Config::parse();
    member_service::run(config).await?;
    Ok(())
}
