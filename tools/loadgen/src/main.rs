//! `loadgen`: drives the bookmesh mesh over gRPC and reports what users know from ghz.
//!
//! It registers members and books, then runs a mix of reads (GetRentalCard), rents and
//! returns against the rental service, at a constant rate or a fixed concurrency, for a
//! duration or a count. Calls go through the shared client stack (discovery, several
//! connections, balancing) with retries off, so the report shows what the mesh answered.
//!
//! Its members behave like real ones (`model`): they rent books that are on the shelf, return
//! what they hold once the rental is confirmed, and stay under the five-book limit. The report
//! separates what the rules refused (expected when the model's belief is stale) from calls
//! that failed.

mod model;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bookmesh::client::{Idempotency, Upstream, UpstreamConfig};
use bookmesh::config::IdentityArgs;
use bookmesh::config::parse_duration;
use bookmesh::identity::Identity;
use bookmesh::proto::book::v1::RegisterBookRequest;
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::RegisterMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::proto::rental::v1::{GetRentalCardRequest, RentBookRequest, ReturnBookRequest};
use clap::Parser;
use serde::Serialize;
use tonic::Code;

/// Load generator for the bookmesh rental mesh.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Rental service endpoints (comma-separated; names are resolved and balanced over).
    #[arg(
        long,
        env = "LOADGEN_RENTAL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50053"
    )]
    rental: Vec<String>,
    /// Member service endpoints, used to register the members of the scenario.
    #[arg(
        long,
        env = "LOADGEN_MEMBER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50052"
    )]
    member: Vec<String>,
    /// Book service endpoints, used to register the books of the scenario.
    #[arg(
        long,
        env = "LOADGEN_BOOK",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    book: Vec<String>,
    /// The load generator's own identity (`<pki-dir>/loadgen.crt`).
    #[command(flatten)]
    identity: IdentityArgs,
    /// Workers sending back to back (fixed concurrency). Ignored with --rate.
    #[arg(long, short = 'c', default_value_t = 8)]
    concurrency: usize,
    /// Requests per second (constant rate, open loop); 0 means fixed concurrency instead.
    #[arg(long, short = 'r', default_value_t = 0.0)]
    rate: f64,
    /// Stop after this long (e.g. 30s)... Given twice (`make loadgen ARGS="-z 30s"`), the
    /// last one counts.
    #[arg(long, short = 'z', value_parser = parse_duration, overrides_with = "duration")]
    duration: Option<Duration>,
    /// ...or after this many requests (default 1000 when no duration is given).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Scenario mix, weights: `read=70,rent=20,return=10`.
    #[arg(long, default_value = "read=70,rent=20,return=10")]
    mix: String,
    /// Members and books registered before the run.
    #[arg(long, default_value_t = 50)]
    members: usize,
    #[arg(long, default_value_t = 200)]
    books: usize,
    /// Reuse the members and books listed in this file (JSON) instead of registering new
    /// ones; written after registration if it does not exist yet.
    #[arg(long)]
    ids_file: Option<std::path::PathBuf>,
    /// Deadline of each call.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    timeout: Duration,
    /// How long after a rent (or return) answered its book is returned (or rented) again at
    /// the earliest: the rental saga's time to confirm it.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    settle: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

use model::{Ended, Library, Planned, Refusal, Want as Operation};

struct Mix(Vec<(Operation, u32)>);

impl Mix {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut weights = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .context("mix entries are NAME=WEIGHT")?;
            let operation = match name.trim() {
                "read" => Operation::Read,
                "rent" => Operation::Rent,
                "return" => Operation::Return,
                other => bail!("unknown operation `{other}` (read, rent, return)"),
            };
            weights.push((operation, weight.trim().parse().context("weight")?));
        }
        if weights.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            bail!("the mix has no weight");
        }
        Ok(Self(weights))
    }

    fn pick(&self) -> Operation {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut roll = fastrand::u32(..total);
        for (operation, weight) in &self.0 {
            if roll < *weight {
                return *operation;
            }
            roll -= weight;
        }
        self.0[0].0
    }
}

struct Scenario {
    rental: Upstream,
    members: Vec<String>,
    books: Vec<String>,
    library: Mutex<Library>,
    mix: Mix,
}

#[derive(Default)]
struct Results {
    latencies_us: Vec<u64>,
    codes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    succeeded: u64,
    refused: u64,
    failed: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    count: u64,
    total_secs: f64,
    requests_per_sec: f64,
    average_ms: f64,
    fastest_ms: f64,
    slowest_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    status_codes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    /// Calls that did what was asked.
    succeeded: u64,
    /// Calls the rules refused (FAILED_PRECONDITION, ALREADY_EXISTS, NOT_FOUND): answers, not
    /// failures, though a realistic load keeps them rare.
    refused: u64,
    /// Calls that failed: unavailable, deadline exceeded, aborted, internal…
    failed: u64,
}

fn upstream(
    name: &str,
    endpoints: &[String],
    timeout: Duration,
    identity: &Identity,
) -> anyhow::Result<Upstream> {
    let mut config = UpstreamConfig::new(name, endpoints.to_vec());
    config.call_timeout = timeout;
    config.retry.max_attempts = 1;
    // The load generator measures the mesh; it must not protect it.
    config.breaker.minimum_calls = usize::MAX;
    config.connections_per_endpoint = 4;
    config.resolve_interval = Duration::from_secs(2);
    Ok(Upstream::new(config, identity)?)
}

#[derive(Serialize, serde::Deserialize)]
struct Ids {
    members: Vec<String>,
    books: Vec<String>,
}

async fn setup(args: &Args) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    if let Some(path) = &args.ids_file
        && path.exists()
    {
        let ids: Ids = serde_json::from_slice(&std::fs::read(path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok((ids.members, ids.books));
    }
    let (members, books) = register(args).await?;
    if let Some(path) = &args.ids_file {
        let ids = Ids { members, books };
        std::fs::write(path, serde_json::to_vec(&ids)?)?;
        return Ok((ids.members, ids.books));
    }
    Ok((members, books))
}

async fn register(args: &Args) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let identity = Identity::from_args(&args.identity, "loadgen")?;
    let members_upstream = upstream("member", &args.member, args.timeout, &identity)?;
    let books_upstream = upstream("book", &args.book, args.timeout, &identity)?;
    let run = fastrand::u64(..);
    let mut members = Vec::with_capacity(args.members);
    for i in 0..args.members {
        let request = RegisterMemberRequest {
            name: format!("Load member {i}"),
            email: format!("load-{run:x}-{i}@example.org"),
        };
        let member = members_upstream
            .call(
                Idempotency::NotIdempotent,
                request,
                |channel, request| async move {
                    MemberServiceClient::new(channel)
                        .register_member(request)
                        .await
                },
            )
            .await
            .context("registering a member")?;
        members.push(member.member.context("member")?.member_id);
    }
    let mut books = Vec::with_capacity(args.books);
    for i in 0..args.books {
        let request = RegisterBookRequest {
            title: format!("Load book {i}"),
            author: "Loadgen".into(),
            isbn: "9780306406157".into(),
            publisher: "Bookmesh".into(),
            published_on: "2020-01-01".into(),
            classification: "Benchmark".into(),
            location: "Shelf L".into(),
        };
        let book = books_upstream
            .call(
                Idempotency::NotIdempotent,
                request,
                |channel, request| async move {
                    BookServiceClient::new(channel).register_book(request).await
                },
            )
            .await
            .context("registering a book")?;
        books.push(book.book.context("book")?.book_id);
    }
    Ok((members, books))
}

impl Scenario {
    async fn one(&self) -> Result<(), tonic::Status> {
        let wanted = self.mix.pick();
        let planned = self
            .lock_library()
            .plan(wanted, Instant::now(), &mut |n| fastrand::usize(..n));
        let outcome = match &planned {
            Planned::Read { member } => {
                let request = GetRentalCardRequest {
                    member_id: self.members[*member].clone(),
                    ..Default::default()
                };
                self.rental
                    .call(
                        Idempotency::Idempotent,
                        request,
                        |channel, request| async move {
                            RentalServiceClient::new(channel)
                                .get_rental_card(request)
                                .await
                        },
                    )
                    .await
                    .map(|_| ())
            }
            Planned::Rent { member, book } => {
                let request = RentBookRequest {
                    member_id: self.members[*member].clone(),
                    book_id: self.books[*book].clone(),
                };
                self.rental
                    .call(
                        Idempotency::Idempotent,
                        request,
                        |channel, request| async move {
                            RentalServiceClient::new(channel).rent_book(request).await
                        },
                    )
                    .await
                    .map(|_| ())
            }
            Planned::Return { member, book } => {
                let request = ReturnBookRequest {
                    member_id: self.members[*member].clone(),
                    book_id: self.books[*book].clone(),
                };
                self.rental
                    .call(
                        Idempotency::Idempotent,
                        request,
                        |channel, request| async move {
                            RentalServiceClient::new(channel).return_book(request).await
                        },
                    )
                    .await
                    .map(|_| ())
            }
        };
        self.lock_library()
            .finish(&planned, ended(&outcome), Instant::now());
        outcome
    }

    /// Learns what the members hold already (a reused `--ids-file`, an earlier run).
    async fn read_cards(&self) -> anyhow::Result<()> {
        let index: std::collections::HashMap<&str, usize> = self
            .books
            .iter()
            .enumerate()
            .map(|(i, book)| (book.as_str(), i))
            .collect();
        for (member, member_id) in self.members.iter().enumerate() {
            let request = GetRentalCardRequest {
                member_id: member_id.clone(),
                ..Default::default()
            };
            let card = self
                .rental
                .call(
                    Idempotency::Idempotent,
                    request,
                    |channel, request| async move {
                        RentalServiceClient::new(channel)
                            .get_rental_card(request)
                            .await
                    },
                )
                .await;
            let card = match card {
                Ok(answer) => answer.rental_card.unwrap_or_default(),
                // Never rented: nothing held.
                Err(status) if status.code() == Code::NotFound => continue,
                Err(status) => bail!("reading {member_id}'s card: {status}"),
            };
            let mut library = self.lock_library();
            for item in card.rented_items {
                if let Some(book) = index.get(item.book_id.as_str()) {
                    library.holds(member, *book, Instant::now());
                }
            }
        }
        Ok(())
    }

    fn lock_library(&self) -> std::sync::MutexGuard<'_, Library> {
        self.library
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How a call ended, for the model and the report: the rules' refusals apart from failures.
fn ended(outcome: &Result<(), tonic::Status>) -> Ended {
    match outcome {
        Ok(()) => Ended::Succeeded,
        Err(status) => match status.code() {
            Code::NotFound => Ended::Refused(Refusal::NotThere),
            Code::AlreadyExists => Ended::Refused(Refusal::AlreadyThere),
            Code::FailedPrecondition => Ended::Refused(Refusal::NotNow),
            _ => Ended::Failed,
        },
    }
}

fn record(results: &Mutex<Results>, started: Instant, outcome: Result<(), tonic::Status>) {
    let latency = started.elapsed().as_micros() as u64;
    let mut results = results
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.latencies_us.push(latency);
    let code = match &outcome {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    };
    *results.codes.entry(format!("{code:?}")).or_default() += 1;
    match ended(&outcome) {
        Ended::Succeeded => results.succeeded += 1,
        Ended::Refused(_) => results.refused += 1,
        Ended::Failed => results.failed += 1,
    }
    if let Err(status) = outcome {
        *results
            .errors
            .entry(format!(
                "{:?}: {}",
                status.code(),
                without_ids(status.message())
            ))
            .or_default() += 1;
    }
}

/// Replaces UUIDs with `<id>` so errors group by kind, not by entity.
fn without_ids(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
            if bare.len() == 36 && bare.matches('-').count() == 4 {
                word.replace(bare, "<id>")
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn report(results: Results, total: Duration) -> Report {
    let mut latencies = results.latencies_us;
    latencies.sort_unstable();
    let count = latencies.len() as u64;
    let ms = |us: u64| us as f64 / 1000.0;
    let percentile = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        ms(latencies[rank.clamp(1, latencies.len()) - 1])
    };
    let sum: u64 = latencies.iter().sum();
    Report {
        count,
        total_secs: total.as_secs_f64(),
        requests_per_sec: count as f64 / total.as_secs_f64().max(f64::EPSILON),
        average_ms: if count == 0 {
            0.0
        } else {
            ms(sum) / count as f64
        },
        fastest_ms: latencies.first().copied().map_or(0.0, ms),
        slowest_ms: latencies.last().copied().map_or(0.0, ms),
        p50_ms: percentile(50.0),
        p90_ms: percentile(90.0),
        p95_ms: percentile(95.0),
        p99_ms: percentile(99.0),
        status_codes: results.codes,
        errors: results.errors,
        succeeded: results.succeeded,
        refused: results.refused,
        failed: results.failed,
    }
}

fn print_report(report: &Report) {
    println!();
    println!("Summary:");
    println!("  Count:        {}", report.count);
    println!("  Total:        {:.2} s", report.total_secs);
    println!("  Slowest:      {:.2} ms", report.slowest_ms);
    println!("  Fastest:      {:.2} ms", report.fastest_ms);
    println!("  Average:      {:.2} ms", report.average_ms);
    println!("  Requests/sec: {:.2}", report.requests_per_sec);
    println!();
    println!("Latency distribution:");
    for (label, value) in [
        ("50", report.p50_ms),
        ("90", report.p90_ms),
        ("95", report.p95_ms),
        ("99", report.p99_ms),
    ] {
        println!("  {label} % in {value:.2} ms");
    }
    println!();
    println!(
        "Outcomes:     {} succeeded, {} refused by the rules, {} failed",
        report.succeeded, report.refused, report.failed
    );
    println!();
    println!("Status code distribution:");
    for (code, n) in &report.status_codes {
        println!("  [{code}]   {n} responses");
    }
    if !report.errors.is_empty() {
        println!();
        println!("Error distribution:");
        for (error, n) in &report.errors {
            println!("  [{n}]   {error}");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mix = Mix::parse(&args.mix)?;
    let (duration, count) = match (args.duration, args.count) {
        (None, None) => (None, Some(1000)),
        other => other,
    };
    eprintln!(
        "loadgen: registering {} members and {} books",
        args.members, args.books
    );
    let (members, books) = setup(&args).await?;
    if members.is_empty() || books.is_empty() {
        bail!("--members and --books must be at least 1");
    }
    let scenario = Arc::new(Scenario {
        rental: upstream(
            "rental",
            &args.rental,
            args.timeout,
            &Identity::from_args(&args.identity, "loadgen")?,
        )?,
        library: Mutex::new(Library::new(
            members.len(),
            books.len(),
            args.settle,
            Instant::now(),
        )),
        members,
        books,
        mix,
    });
    scenario.read_cards().await?;
    let results = Arc::new(Mutex::new(Results::default()));
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    // Claims one request slot; false once the count or the duration is used up.
    let claim = {
        let issued = issued.clone();
        move || {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            let n = issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            count.is_none_or(|c| n < c)
        }
    };
    eprintln!(
        "loadgen: running {} for {}",
        if args.rate > 0.0 {
            format!("{} requests/s", args.rate)
        } else {
            format!("{} workers", args.concurrency)
        },
        match (duration, count) {
            (Some(d), _) => format!("{d:?}"),
            (None, Some(c)) => format!("{c} requests"),
            (None, None) => "ever".into(),
        }
    );
    let mut tasks = tokio::task::JoinSet::new();
    if args.rate > 0.0 {
        // Open loop: a request every 1/rate seconds whatever the latency, as real users arrive.
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while claim() {
            ticker.tick().await;
            let scenario = scenario.clone();
            let results = results.clone();
            tasks.spawn(async move {
                let t = Instant::now();
                let outcome = scenario.one().await;
                record(&results, t, outcome);
            });
            while let Some(done) = tasks.try_join_next() {
                done?;
            }
        }
    } else {
        for _ in 0..args.concurrency.max(1) {
            let scenario = scenario.clone();
            let results = results.clone();
            let claim = claim.clone();
            tasks.spawn(async move {
                while claim() {
                    let t = Instant::now();
                    let outcome = scenario.one().await;
                    record(&results, t, outcome);
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    let total = started.elapsed();
    let results = std::mem::take(
        &mut *results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let report = report(results, total);
    eprintln!(
        "loadgen: {} books on the members' cards at the end, as loadgen believes",
        scenario.lock_library().held()
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_reject_nonsense() {
        assert!(Mix::parse("read=1,rent=2,return=0").is_ok());
        assert!(Mix::parse("read=0").is_err());
        assert!(Mix::parse("write=1").is_err());
        assert!(Mix::parse("read").is_err());
    }

    #[test]
    fn errors_group_without_identifiers() {
        assert_eq!(
            without_ids("book 01a212d4-5671-71c1-8a7a-d6997a735c5e is already on the card"),
            "book <id> is already on the card"
        );
    }

    #[test]
    fn percentiles_follow_the_nearest_rank() {
        let results = Results {
            latencies_us: (1..=100).map(|ms| ms * 1000).collect(),
            ..Results::default()
        };
        let report = report(results, Duration::from_secs(2));
        assert_eq!(report.count, 100);
        assert_eq!(report.p50_ms, 50.0);
        assert_eq!(report.p99_ms, 99.0);
        assert_eq!(report.fastest_ms, 1.0);
        assert_eq!(report.slowest_ms, 100.0);
        assert_eq!(report.requests_per_sec, 50.0);
    }
}
