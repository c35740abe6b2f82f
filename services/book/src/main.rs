//! `book-service`: parses its configuration and runs the book service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = book_service::Config::parse();
    book_service::run(config).await?;
    Ok(())
}
