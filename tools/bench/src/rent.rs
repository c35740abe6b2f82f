//! `bookmesh-bench rent`: RentBook's throughput and latency at a fixed concurrency, on a fresh
//! mesh (member, book and rental services, release, plaintext, SQLite as `make run` stores
//! them), with the sagas those rentals start running in the background as they would.
//!
//! Every call rents its own book, and the calls in flight at one moment are for different
//! members (call k is for member k mod M, and M is far above the concurrency), so the rules
//! never refuse one and no two touch the same card: each answer other than OK is a failure.
//! Members and books are registered before the clock starts; the run ends after `--duration`
//! or when the prepared rentals run out, whichever comes first (the report says which).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::RegisterMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::rental::v1::RentBookRequest;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use tonic::transport::Channel;

use super::cpu::{CpuMeter, describe};
use super::saga::{MeshArgs, lock, named, serving, start_mesh};
use super::writer::{WriterMeter, describe_writer};
use super::{binaries, stop};

#[derive(Debug, clap::Args)]
pub struct RentArgs {
    /// RentBook calls in flight at once (closed loop: a worker sends its next call when its
    /// last one answered).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long RentBook is loaded.
    #[arg(long, value_parser = bookmesh::config::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Rentals prepared (a book each, a member per five): the most the run can send.
    #[arg(long, default_value_t = 25_000)]
    rentals: usize,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// Books a member may hold at once (the rental rules' limit).
const BOOKS_PER_MEMBER: usize = 5;

/// Registrations in flight while preparing.
const PREPARE_CONCURRENCY: usize = 32;

pub async fn run(args: RentArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be positive");
    anyhow::ensure!(
        args.rentals >= args.concurrency * BOOKS_PER_MEMBER,
        "--rentals must be at least five times --concurrency"
    );
    let bin_dir = binaries(args.mesh.bin_dir.clone())?;
    let work = tempfile::tempdir()?;
    let (mut processes, [member, book, rental], [_, _, rental_admin]) =
        start_mesh(&bin_dir, work.path(), &args.mesh.db)?;
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let result = async {
        let members = serving(&url(member)).await?;
        let books = serving(&url(book)).await?;
        let rentals = serving(&url(rental)).await?;
        let pairs = prepare(members, books, args.rentals).await?;
        let meter = CpuMeter::start(&named(&processes));
        let writer = WriterMeter::start(rental_admin).await;
        let mut row = load(rentals, pairs, args.concurrency, args.duration).await?;
        let calls = row["ok"].as_u64().unwrap_or_default() as usize;
        row["cpu"] = meter.finish(calls);
        row["rental_writer"] = writer.finish(calls).await;
        Ok::<_, anyhow::Error>(row)
    }
    .await;
    for process in &mut processes {
        stop(process).await;
    }
    let row = result?;
    println!();
    println!(
        "RentBook, {} calls in flight, fresh mesh (member, book, rental) on {}, every call its own book and card",
        args.concurrency, args.mesh.db
    );
    println!(
        "{:>10} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}  errors",
        "in flight", "seconds", "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    println!(
        "{:>10} {:>8.1} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}{}",
        args.concurrency,
        row["seconds"].as_f64().unwrap_or_default(),
        row["calls_per_second"].as_f64().unwrap_or_default(),
        row["p50_ms"].as_f64().unwrap_or_default(),
        row["p90_ms"].as_f64().unwrap_or_default(),
        row["p99_ms"].as_f64().unwrap_or_default(),
        row["max_ms"].as_f64().unwrap_or_default(),
        row["errors"],
        if row["ran_out"].as_bool().unwrap_or_default() {
            "  (the prepared rentals ran out before the duration: raise --rentals)"
        } else {
            ""
        }
    );
    if let Some(line) = describe(&row["cpu"], "rental") {
        println!("{line}");
    }
    if let Some(line) = describe_writer(&row["rental_writer"], "rental-service") {
        println!("{line}");
    }
    if let Some(path) = &args.mesh.json {
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&row)?)?;
    }
    // No call here may be refused: a failure is a bug, not a figure.
    let failed = row["errors"]
        .as_object()
        .is_some_and(|errors| !errors.is_empty());
    anyhow::ensure!(
        !failed && row["ok"].as_u64().unwrap_or_default() > 0,
        "RentBook calls failed: {}",
        row["errors"]
    );
    Ok(())
}

/// Registers the members and books: returns (member, book) per rental, ordered so that
/// consecutive rentals are for different members.
async fn prepare(
    members: Channel,
    books: Channel,
    rentals: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let member_count = rentals.div_ceil(BOOKS_PER_MEMBER);
    let member_ids = register_all(member_count, move |i| {
        let mut client = MemberServiceClient::new(members.clone());
        async move {
            Ok(client
                .register_member(RegisterMemberRequest {
                    name: format!("Rent bench member {i}"),
                    email: format!("rent-{i}@example.org"),
                })
                .await?
                .into_inner()
                .member
                .context("member")?
                .member_id)
        }
    })
    .await
    .context("registering members")?;
    let book_ids = register_all(rentals, move |_| {
        let mut client = BookServiceClient::new(books.clone());
        async move {
            Ok(client
                .register_book(super::reads::a_book())
                .await?
                .into_inner()
                .book
                .context("book")?
                .book_id)
        }
    })
    .await
    .context("registering books")?;
    Ok(book_ids
        .into_iter()
        .enumerate()
        .map(|(k, book_id)| (member_ids[k % member_count].clone(), book_id))
        .collect())
}

/// Runs `register(i)` for i in 0..count, PREPARE_CONCURRENCY at a time; the ids in order.
async fn register_all<F, Fut>(count: usize, register: F) -> anyhow::Result<Vec<String>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>> + Send + 'static,
{
    let mut ids = vec![String::new(); count];
    let mut running = tokio::task::JoinSet::new();
    for i in 0..count {
        if running.len() >= PREPARE_CONCURRENCY
            && let Some(done) = running.join_next().await
        {
            let (index, id): (usize, String) = done??;
            ids[index] = id;
        }
        let registered = register(i);
        running.spawn(async move { Ok::<_, anyhow::Error>((i, registered.await?)) });
    }
    while let Some(done) = running.join_next().await {
        let (index, id) = done??;
        ids[index] = id;
    }
    Ok(ids)
}

/// `concurrency` workers send RentBook for the next prepared pair until `duration` passes or
/// the pairs run out.
async fn load(
    rentals: Channel,
    pairs: Vec<(String, String)>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let pairs = Arc::new(pairs);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let started = Instant::now();
    let until = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (pairs, next, errors) = (pairs.clone(), next.clone(), errors.clone());
        let mut client = RentalServiceClient::new(rentals.clone());
        workers.spawn(async move {
            let mut latencies_us = Vec::new();
            while Instant::now() < until {
                let Some((member_id, book_id)) = pairs.get(next.fetch_add(1, Ordering::Relaxed))
                else {
                    break;
                };
                let mut request = tonic::Request::new(RentBookRequest {
                    member_id: member_id.clone(),
                    book_id: book_id.clone(),
                });
                request.set_timeout(Duration::from_secs(5));
                let sent = Instant::now();
                match client.rent_book(request).await {
                    Ok(_) => latencies_us
                        .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
                    Err(status) => {
                        *lock(&errors)
                            .entry(format!("{:?}", status.code()))
                            .or_default() += 1;
                    }
                }
            }
            latencies_us
        });
    }
    let mut latencies_us = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies_us.extend(done?);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let percentile = |p: f64| {
        if latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((latencies_us.len() - 1) as f64 * p).round() as usize;
        (f64::from(latencies_us[index]) / 10.0).round() / 100.0
    };
    let errors = lock(&errors).clone();
    Ok(serde_json::json!({
        "bench": "rent",
        "concurrency": concurrency,
        "seconds": (seconds * 10.0).round() / 10.0,
        "ok": latencies_us.len(),
        "calls_per_second": (latencies_us.len() as f64 / seconds).round(),
        "p50_ms": percentile(0.50),
        "p90_ms": percentile(0.90),
        "p99_ms": percentile(0.99),
        "max_ms": percentile(1.0),
        "errors": errors,
        "ran_out": next.load(Ordering::Relaxed) >= pairs.len(),
    }))
}
