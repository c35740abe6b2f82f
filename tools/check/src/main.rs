//! `bookmesh-check`: checks that the services agree once the sagas settle (see the library).
//! Exit code 0 when consistent, 1 with the violations listed otherwise.

use std::time::Duration;

use bookmesh::config::parse_duration;
use bookmesh_check::{Endpoints, check_until_consistent};
use clap::Parser;

/// Consistency check across the bookmesh services, through their APIs only.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[arg(
        long,
        env = "BOOKMESH_BOOK_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    book: String,
    #[arg(
        long,
        env = "BOOKMESH_MEMBER_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    member: String,
    #[arg(
        long,
        env = "BOOKMESH_RENTAL_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    rental: String,
    /// Best-seller service; `none` skips its check.
    #[arg(
        long,
        env = "BOOKMESH_BESTBOOK_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    bestbook: String,
    /// The check's own identity (`<pki-dir>/check.crt`).
    #[command(flatten)]
    identity: bookmesh::config::IdentityArgs,
    /// How long to wait for the sagas to settle.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    wait: Duration,
    /// A saga step settling longer than this is reported as stuck (the rental service's
    /// --saga-step-timeout gives up rentals after the same default).
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    stuck_after: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endpoints = Endpoints {
        identity: bookmesh::identity::Identity::from_args(&args.identity, "check")?,
        book: args.book,
        member: args.member,
        rental: args.rental,
        bestbook: (args.bestbook != "none").then_some(args.bestbook),
        stuck_after: args.stuck_after,
    };
    let report = check_until_consistent(&endpoints, args.wait).await?;
    println!(
        "checked {} members, {} books, {} rental items; {} still settling",
        report.members, report.books, report.items, report.settling
    );
    if report.is_consistent() {
        println!("consistent");
        return Ok(());
    }
    for stuck in &report.stuck {
        println!("STUCK: {stuck}");
    }
    for violation in &report.violations {
        println!("VIOLATION: {violation}");
    }
    std::process::exit(1);
}
