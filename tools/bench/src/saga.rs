//! `bookmesh-bench saga`: how long the rental saga takes to converge under a fixed rate of
//! rentals: the time from RentBook's answer until the item is RENTED, seen as RentConfirmed on
//! the rental service's event feed (what every consumer sees).
//!
//! For each rate a fresh mesh (member, book and rental services, plaintext, SQLite under a
//! temporary folder, as `make run` stores them) is started; every RentBook is for its own
//! member and its own book, so no two calls touch the same card or copy: whatever ABORTED
//! appears is spurious. Rentals are sent at the rate for `--seconds`, then the bench waits (at
//! most 60 s) for the confirmations still in flight.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::events::v1::SubscribeRequest;
use bookmesh::proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use bookmesh::proto::member::v1::RegisterMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::rental::v1::RentBookRequest;
use bookmesh::proto::rental::v1::RentConfirmed;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use prost::Message as _;
use tokio::process::{Child, Command};

use super::cpu::{CpuMeter, describe};
use super::{binaries, stop, tonic_health_ready};

#[derive(Debug, clap::Args)]
pub struct SagaArgs {
    /// Rentals per second, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,25,50")]
    rates: Vec<f64>,
    /// How long rentals are sent at each rate.
    #[arg(long, value_parser = bookmesh::config::parse_duration, default_value = "10s")]
    duration: Duration,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// Where the benches that start a mesh (saga, rent) find it and write their figures.
#[derive(Debug, clap::Args)]
pub(crate) struct MeshArgs {
    /// Folder of the service binaries (default: this binary's own folder).
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// The services' databases: `sqlite` (files under a temporary folder, as `make run`
    /// stores them), or `postgres` (a fresh database each on the local server).
    #[arg(long, env = "BENCH_DB", default_value = "sqlite")]
    pub(crate) db: String,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

/// When each rental was answered and confirmed, by (member, book).
#[derive(Default)]
struct Timeline {
    answered: HashMap<(String, String), Instant>,
    confirmed: HashMap<(String, String), Instant>,
}

pub async fn run(args: SagaArgs) -> anyhow::Result<()> {
    let bin_dir = binaries(args.mesh.bin_dir.clone())?;
    println!();
    println!(
        "Saga convergence: RentBook answered → RentConfirmed on rental's feed; each rental its own member and book; {:?} per rate, fresh mesh per rate on {}",
        args.duration, args.mesh.db
    );
    println!(
        "{:>8} {:>7} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}  errors",
        "rate/s", "sent", "ok", "confirmed", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let mut rows = Vec::new();
    for &rate in &args.rates {
        if rate <= 0.0 {
            bail!("rates must be positive");
        }
        let row = one_rate(&bin_dir, rate, args.duration, &args.mesh.db)
            .await
            .with_context(|| format!("at {rate}/s"))?;
        println!(
            "{:>8} {:>7} {:>7} {:>10} {:>9.0} {:>9.0} {:>9.0} {:>9.0}  {}",
            rate,
            row["sent"].as_u64().unwrap_or_default(),
            row["ok"].as_u64().unwrap_or_default(),
            row["confirmed"].as_u64().unwrap_or_default(),
            row["p50_ms"].as_f64().unwrap_or_default(),
            row["p90_ms"].as_f64().unwrap_or_default(),
            row["p99_ms"].as_f64().unwrap_or_default(),
            row["max_ms"].as_f64().unwrap_or_default(),
            row["errors"]
        );
        if let Some(line) = describe(&row["cpu"], "confirmed rental") {
            println!("{:>8} {line}", "");
        }
        rows.push(row);
    }
    if let Some(path) = &args.mesh.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let document = serde_json::json!({ "bench": "saga", "seconds_per_rate": args.duration.as_secs_f64(), "rates": rows });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)?;
    }
    Ok(())
}

async fn one_rate(
    bin_dir: &Path,
    rate: f64,
    duration: Duration,
    db: &str,
) -> anyhow::Result<serde_json::Value> {
    let work = tempfile::tempdir()?;
    let (mut processes, [member, book, rental], _admin) = start_mesh(bin_dir, work.path(), db)?;
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let result = async {
        let member_channel = serving(&url(member)).await?;
        let book_channel = serving(&url(book)).await?;
        let rental_channel = serving(&url(rental)).await?;
        let count = (rate * duration.as_secs_f64()).ceil() as usize;
        let mut pairs = Vec::with_capacity(count);
        let mut members = MemberServiceClient::new(member_channel);
        let mut books = BookServiceClient::new(book_channel);
        for i in 0..count {
            let member_id = members
                .register_member(RegisterMemberRequest {
                    name: format!("Saga member {i}"),
                    email: format!("saga-{i}@example.org"),
                })
                .await?
                .into_inner()
                .member
                .context("member")?
                .member_id;
            let book_id = books
                .register_book(super::reads::a_book())
                .await?
                .into_inner()
                .book
                .context("book")?
                .book_id;
            pairs.push((member_id, book_id));
        }
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let feed = tokio::spawn(follow_feed(rental_channel.clone(), timeline.clone()));
        let errors = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
        // From the first rental sent until the last confirmed (or the wait gives up).
        let meter = CpuMeter::start(&named(&processes));
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sends = tokio::task::JoinSet::new();
        for (member_id, book_id) in pairs.clone() {
            ticker.tick().await;
            let mut client = RentalServiceClient::new(rental_channel.clone());
            let (timeline, errors) = (timeline.clone(), errors.clone());
            sends.spawn(async move {
                let mut request = tonic::Request::new(RentBookRequest {
                    member_id: member_id.clone(),
                    book_id: book_id.clone(),
                });
                request.set_timeout(Duration::from_secs(5));
                match client.rent_book(request).await {
                    Ok(_) => {
                        lock(&timeline)
                            .answered
                            .insert((member_id, book_id), Instant::now());
                    }
                    Err(status) => {
                        *lock(&errors)
                            .entry(format!("{:?}", status.code()))
                            .or_default() += 1;
                    }
                }
            });
        }
        while sends.join_next().await.is_some() {}
        // The confirmations still in flight.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = {
                let timeline = lock(&timeline);
                timeline
                    .answered
                    .keys()
                    .all(|key| timeline.confirmed.contains_key(key))
            };
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        feed.abort();
        let timeline = lock(&timeline);
        let cpu = meter.finish(timeline.confirmed.len());
        let mut gaps: Vec<f64> = timeline
            .answered
            .iter()
            .filter_map(|(key, answered)| {
                timeline.confirmed.get(key).map(|confirmed| {
                    confirmed.saturating_duration_since(*answered).as_secs_f64() * 1000.0
                })
            })
            .collect();
        gaps.sort_by(f64::total_cmp);
        let percentile = |p: f64| {
            if gaps.is_empty() {
                return 0.0;
            }
            gaps[((gaps.len() - 1) as f64 * p).round() as usize]
        };
        let errors = lock(&errors).clone();
        Ok::<_, anyhow::Error>(serde_json::json!({
            "rate": rate,
            "sent": count,
            "ok": timeline.answered.len(),
            "confirmed": gaps.len(),
            "p50_ms": percentile(0.50).round(),
            "p90_ms": percentile(0.90).round(),
            "p99_ms": percentile(0.99).round(),
            "max_ms": percentile(1.0).round(),
            "errors": errors,
            "cpu": cpu,
        }))
    }
    .await;
    for process in &mut processes {
        stop(process).await;
    }
    result
}

/// The mesh's processes by name (start_mesh's order), for a CpuMeter.
pub(crate) fn named(processes: &[Child]) -> Vec<(String, Option<u32>)> {
    ["member", "book", "rental"]
        .iter()
        .zip(processes)
        .map(|(name, process)| (format!("{name}-service"), process.id()))
        .collect()
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records when each RentConfirmed appears on the rental feed.
async fn follow_feed(channel: tonic::transport::Channel, timeline: Arc<Mutex<Timeline>>) {
    let mut client = EventFeedServiceClient::new(channel);
    let Ok(stream) = client
        .subscribe(SubscribeRequest { after_sequence: 0 })
        .await
    else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Ok(Some(answer)) = stream.message().await {
        let Some(event) = answer.event else { continue };
        if event.event_type != "bookmesh.rental.v1.RentConfirmed" {
            continue;
        }
        let Some(payload) = event.payload else {
            continue;
        };
        if let Ok(confirmed) = RentConfirmed::decode(payload.value.as_slice()) {
            lock(&timeline)
                .confirmed
                .insert((confirmed.member_id, confirmed.book_id), Instant::now());
        }
    }
}

/// Starts member, book and rental services (release, plaintext; SQLite under `work`, or with
/// `db` = `postgres` a fresh database each) on free ports; returns the processes, their gRPC
/// ports and their admin ports (`/metrics`), each as (member, book, rental).
pub(crate) fn start_mesh(
    bin_dir: &Path,
    work: &Path,
    db: &str,
) -> anyhow::Result<(Vec<Child>, [u16; 3], [u16; 3])> {
    let port = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (member, book, rental) = (port()?, port()?, port()?);
    let admin = [port()?, port()?, port()?];
    let mut processes = Vec::new();
    for ((name, listen), admin) in [("member", member), ("book", book), ("rental", rental)]
        .into_iter()
        .zip(admin)
    {
        let database = match db {
            "sqlite" => None,
            "postgres" => Some(super::reads::fresh_postgres(&format!(
                "bench_{}_{name}_{listen}",
                std::process::id()
            ))?),
            other => bail!("--db must be sqlite or postgres, not {other}"),
        };
        processes.push(spawn(
            bin_dir,
            name,
            [listen, admin],
            work,
            [member, book, rental],
            database,
        )?);
    }
    Ok((processes, [member, book, rental], admin))
}

pub(crate) async fn serving(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect()
            .await
            && tonic_health_ready(channel.clone()).await
        {
            return Ok(channel);
        }
        if Instant::now() > deadline {
            bail!("{url} did not come up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn(
    bin_dir: &Path,
    name: &str,
    [listen, admin]: [u16; 2],
    work: &Path,
    [member, book, rental]: [u16; 3],
    database: Option<String>,
) -> anyhow::Result<Child> {
    let binary = bin_dir.join(format!("{name}-service"));
    if !binary.exists() {
        bail!("{} not found: build it first", binary.display());
    }
    let mut command = Command::new(binary);
    if let Some(url) = database {
        command.env("BOOKMESH_DATABASE_URL", url);
    }
    command
        .env("BOOKMESH_LISTEN", format!("127.0.0.1:{listen}"))
        .env("BOOKMESH_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("BOOKMESH_DATA_DIR", work.join(name))
        .env("BOOKMESH_INSECURE_PLAINTEXT", "true")
        .env(
            "BOOKMESH_MEMBER_ENDPOINTS",
            format!("http://127.0.0.1:{member}"),
        )
        .env(
            "BOOKMESH_BOOK_ENDPOINTS",
            format!("http://127.0.0.1:{book}"),
        )
        .env(
            "BOOKMESH_RENTAL_ENDPOINTS",
            format!("http://127.0.0.1:{rental}"),
        )
        .env("BOOKMESH_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    Ok(command.spawn()?)
}
