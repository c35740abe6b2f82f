//! `rental-service`: parses its configuration and runs the rental service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = rental_service::Config::parse();
    rental_service::run(config).await?;
    Ok(())
}
