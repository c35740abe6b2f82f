//! `rental-service`: parses its configuration and runs the rental service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bookmesh::service::run(rental_service::Config::parse()).await?;
    Ok(())
}
