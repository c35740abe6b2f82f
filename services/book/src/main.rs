//! `book-service`: parses its configuration and runs the book service until stopped.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bookmesh::service::main(book_service::Config::parse()).await
}
