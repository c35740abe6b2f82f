//! `book-service`: parses its configuration and runs the book service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bookmesh::service::run(book_service::Config::parse()).await?;
    Ok(())
}
