//! `bookmesh-bench security`: what mTLS and authorization cost a call, in one run. The same
//! book-service binary serves GetBook three ways, one after the other on a fresh port: in
//! plaintext without authorization (the development mode), over mTLS to a workload whose
//! certificate the policy checks, and over TLS to a user whose token is verified on every
//! call. The same closed-loop load (warm connections, fixed concurrency) is sent to each, and
//! throughput and latency percentiles are printed side by side.
//!
//! Load generator and server share the machine, so one run of a way can be off by ten per
//! cent or more (the scheduler, a neighbour). The ways therefore take turns for several
//! rounds, and each is reported by its median round, with the slowest and fastest beside it:
//! a difference smaller than that spread is noise.
//!
//! `make bench-security` runs it on release builds; CI runs a short one to keep it working.
//! The figures are in docs/security.md.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bookmesh::identity::{CredentialFiles, Credentials, SpiffeId};
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::book::v1::{GetBookRequest, ListBooksRequest, RegisterBookRequest};
use clap::{Parser, Subcommand};

mod cpu;
mod footprint;
mod reads;
mod rent;
mod saga;
mod writer;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// GetBook in plaintext, over mTLS as a workload, over TLS with a user token.
    Security {
        /// How long each way is loaded (after a warm-up of a tenth of it).
        #[arg(long, value_parser = bookmesh::config::parse_duration, default_value = "10s")]
        duration: Duration,
        /// HTTP/2 connections the load is spread over (opened before the clock starts).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Calls in flight at once (closed loop).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Rounds: each way is run once per round, in turns.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
        /// Folder of the book-service binary (default: this binary's own folder).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Reads through the full stack against the limit: a bare tonic server answering the
    /// same GetBook message; book-service's GetBook and ListBooks on SQLite (or PostgreSQL
    /// with BENCH_DB=postgres). A table of ratios, a JSON file and an SVG chart.
    Reads(reads::ReadsArgs),
    /// Saga convergence: RentBook's answer to RentConfirmed on the feed, at fixed rates.
    Saga(saga::SagaArgs),
    /// RentBook's throughput and latency at a fixed concurrency, sagas running behind it.
    Rent(rent::RentArgs),
    /// Each Rust service's start to SERVING, idle resident memory and binary size.
    Footprint(footprint::FootprintArgs),
    /// The bare tonic server `reads` measures against (started by it, pinned to a core).
    BareServer {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

/// How the load generator reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plaintext,
    WorkloadMtls,
    UserToken,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext, no authorization",
            Self::WorkloadMtls => "mTLS + authorization (workload)",
            Self::UserToken => "TLS + authorization (user token)",
        }
    }
}

#[derive(Default)]
struct Figures {
    calls: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
}

impl Figures {
    fn merge(&mut self, other: Figures) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.seconds += other.seconds;
        self.latencies_us.extend(other.latencies_us);
    }

    fn throughput(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Security {
            duration,
            connections,
            concurrency,
            rounds,
            bin_dir,
        } => security(duration, connections, concurrency, rounds, bin_dir).await,
        Bench::Reads(args) => reads::run(args).await,
        Bench::Footprint(args) => footprint::run(args).await,
        Bench::Saga(args) => saga::run(args).await,
        Bench::Rent(args) => rent::run(args).await,
        Bench::BareServer { listen } => reads::serve_bare(listen).await,
    }
}

/// The folder of the binaries: `--bin-dir`, or this binary's own.
fn binaries(bin_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("no folder")?
            .to_path_buf(),
    })
}

async fn security(
    duration: Duration,
    connections: usize,
    concurrency: usize,
    rounds: u32,
    bin_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let bin_dir = binaries(bin_dir)?;
    let work = tempfile::tempdir()?;
    let pki = work.path().join("pki");
    bookmesh::identity::pki::ensure_local(
        &pki,
        "bookmesh.local",
        "bookmesh",
        &["book", "loadgen"],
    )?;
    const MODES: [Mode; 3] = [Mode::Plaintext, Mode::WorkloadMtls, Mode::UserToken];
    // Per way: every round's throughput, and all rounds' calls and latencies together.
    let mut rows: Vec<(Mode, Vec<f64>, Figures)> = MODES
        .iter()
        .map(|&mode| (mode, Vec::new(), Figures::default()))
        .collect();
    for _ in 0..rounds {
        for (mode, throughputs, total) in &mut rows {
            let figures = run(
                *mode,
                &bin_dir,
                work.path(),
                &pki,
                duration,
                connections,
                concurrency,
            )
            .await
            .with_context(|| mode.label())?;
            throughputs.push(figures.throughput());
            total.merge(figures);
        }
    }
    for (_, throughputs, total) in &mut rows {
        throughputs.sort_by(f64::total_cmp);
        total.latencies_us.sort_unstable();
    }
    let median = |throughputs: &[f64]| throughputs[throughputs.len() / 2];
    let base = median(&rows[0].1);
    println!();
    println!(
        "GetBook, {concurrency} calls in flight over {connections} warm connections, {rounds} rounds of {duration:?} per way (debug builds say little: make bench-security)"
    );
    println!(
        "{:<34} {:>10} {:>15} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "way", "calls/s", "rounds min-max", "vs plain", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for (mode, throughputs, total) in &rows {
        let spread = format!(
            "{:.0}-{:.0}",
            throughputs[0],
            throughputs[throughputs.len() - 1]
        );
        println!(
            "{:<34} {:>10.0} {:>15} {:>8.1}% {:>8.2} {:>8.2} {:>8.2} {:>7}",
            mode.label(),
            median(throughputs),
            spread,
            100.0 * (median(throughputs) / base - 1.0),
            total.percentile(0.50),
            total.percentile(0.99),
            total.percentile(1.0),
            total.errors
        );
    }
    if rows
        .iter()
        .any(|(_, _, total)| total.errors > 0 || total.calls == 0)
    {
        bail!("calls failed: the figures are not comparable");
    }
    Ok(())
}

async fn run(
    mode: Mode,
    bin_dir: &std::path::Path,
    work: &std::path::Path,
    pki: &std::path::Path,
    duration: Duration,
    connections: usize,
    concurrency: usize,
) -> anyhow::Result<Figures> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let database = work.join(format!("book-{port}.db"));
    let mut server = start(mode, bin_dir, pki, port, &database)?;
    let result = async {
        let workload = Arc::new(credentials(pki, "loadgen")?);
        let token = bookmesh::auth::DevTokenIssuer::from_pki(pki, "bookmesh-dev", "bookmesh")?
            .issue("bench-librarian", &["librarian"], 3600);
        let channels = connect(mode, &url, &workload, connections).await?;
        let authorization = (mode == Mode::UserToken).then(|| format!("Bearer {token}"));
        // A librarian registers the one book every call reads (the load generator's identity
        // may too).
        let mut register = tonic::Request::new(RegisterBookRequest {
            title: "The Left Hand of Darkness".into(),
            author: "Ursula K. Le Guin".into(),
            isbn: "9780441478125".into(),
            publisher: "Ace".into(),
            published_on: "1969-03-01".into(),
            classification: "Fiction".into(),
            location: "Bench shelf".into(),
        });
        if mode != Mode::Plaintext {
            register
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        let book_id = BookServiceClient::new(channels[0].clone())
            .register_book(register)
            .await?
            .into_inner()
            .book
            .context("book")?
            .book_id;
        // Warm-up: connections, caches, the server's pool.
        load(
            &channels,
            &book_id,
            authorization.as_deref(),
            duration / 10,
            concurrency,
        )
        .await;
        Ok::<_, anyhow::Error>(
            load(
                &channels,
                &book_id,
                authorization.as_deref(),
                duration,
                concurrency,
            )
            .await,
        )
    }
    .await;
    stop(&mut server).await;
    result
}

fn credentials(pki: &std::path::Path, workload: &str) -> anyhow::Result<Credentials> {
    let credentials = Credentials::load(
        SpiffeId::new("bookmesh.local", "bookmesh", workload),
        CredentialFiles {
            certificate: pki.join(format!("{workload}.crt")),
            key: pki.join(format!("{workload}.key")),
            authorities: pki.join("ca.crt"),
        },
    )?;
    Arc::try_unwrap(credentials).map_err(|_| anyhow::anyhow!("credentials shared"))
}

fn start(
    mode: Mode,
    bin_dir: &std::path::Path,
    pki: &std::path::Path,
    port: u16,
    database: &std::path::Path,
) -> anyhow::Result<Child> {
    let binary = bin_dir.join("book-service");
    if !binary.exists() {
        bail!("{} not found: build it first", binary.display());
    }
    let mut command = Command::new(binary);
    command
        .env("BOOKMESH_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "BOOKMESH_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", database.display()),
        )
        .env("BOOKMESH_PKI_DIR", pki)
        .env(
            "BOOKMESH_INSECURE_PLAINTEXT",
            (mode == Mode::Plaintext).to_string(),
        )
        // Nothing consumes here; the feed upstream points nowhere.
        .env("BOOKMESH_RENTAL_ENDPOINTS", "http://127.0.0.1:1")
        .env("BOOKMESH_MAX_CONCURRENT_REQUESTS", "4096")
        .env("BOOKMESH_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    Ok(command.spawn()?)
}

async fn stop(server: &mut Child) {
    if let Some(pid) = server.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = server.wait().await;
}

/// `connections` channels, each connected (and, over TLS, handshaken) before the clock starts.
async fn connect(
    mode: Mode,
    url: &str,
    workload: &Arc<Credentials>,
    connections: usize,
) -> anyhow::Result<Vec<Channel>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut channels = Vec::with_capacity(connections);
    while channels.len() < connections {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?;
        let expected = SpiffeId::new("bookmesh.local", "bookmesh", "book");
        let channel = match mode {
            Mode::Plaintext => endpoint.connect().await.map_err(anyhow::Error::from),
            Mode::WorkloadMtls => {
                let config = bookmesh::identity::tls::client_config(workload, expected)?;
                endpoint
                    .connect_with_connector(bookmesh::identity::transport::TlsConnector::new(
                        config,
                    ))
                    .await
                    .map_err(anyhow::Error::from)
            }
            Mode::UserToken => {
                let config = bookmesh::identity::tls::anonymous_client_config(workload, expected)?;
                endpoint
                    .connect_with_connector(bookmesh::identity::transport::TlsConnector::new(
                        config,
                    ))
                    .await
                    .map_err(anyhow::Error::from)
            }
        };
        match channel {
            Ok(channel) => {
                // Serving, migrated: health answers only then; a GetBook would be refused
                // UNAVAILABLE by the readiness gate before.
                let ready = tonic_health_ready(channel.clone()).await;
                if ready {
                    channels.push(channel);
                    continue;
                }
            }
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            bail!("the server did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(channels)
}

/// `GET path` on a service's admin port over plain HTTP/1.1, the connection closed after the
/// answer: its status code and body, or `None` when the port does not answer.
async fn admin_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let answer = String::from_utf8(answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

async fn tonic_health_ready(channel: Channel) -> bool {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32)
}

/// The call a load sends.
#[derive(Debug, Clone)]
enum Op {
    GetBook(String),
    /// The first page (20 books).
    ListBooks,
}

/// `concurrency` loops of GetBook over `channels` for `duration`.
async fn load(
    channels: &[Channel],
    book_id: &str,
    authorization: Option<&str>,
    duration: Duration,
    concurrency: usize,
) -> Figures {
    load_op(
        channels,
        &Op::GetBook(book_id.to_owned()),
        authorization,
        duration,
        concurrency,
    )
    .await
}

/// `concurrency` loops of `op` over `channels` for `duration`, in a closed loop (each worker
/// sends its next call when the last answered).
async fn load_op(
    channels: &[Channel],
    op: &Op,
    authorization: Option<&str>,
    duration: Duration,
    concurrency: usize,
) -> Figures {
    let started = Instant::now();
    let until = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let mut client = BookServiceClient::new(channels[worker % channels.len()].clone());
        let op = op.clone();
        let authorization = authorization
            .map(|value| value.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < until {
                let mut metadata = tonic::metadata::MetadataMap::new();
                if let Some(Ok(value)) = &authorization {
                    metadata.insert("authorization", value.clone());
                }
                let sent = Instant::now();
                let answered = match &op {
                    Op::GetBook(book_id) => client
                        .get_book(tonic::Request::from_parts(
                            metadata,
                            Default::default(),
                            GetBookRequest {
                                book_id: book_id.clone(),
                            },
                        ))
                        .await
                        .map(|_| ()),
                    Op::ListBooks => client
                        .list_books(tonic::Request::from_parts(
                            metadata,
                            Default::default(),
                            ListBooksRequest::default(),
                        ))
                        .await
                        .map(|_| ()),
                };
                match answered {
                    Ok(_) => {
                        latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut figures = Figures::default();
    while let Some(Ok((latencies, errors))) = workers.join_next().await {
        figures.calls += latencies.len() as u64;
        figures.errors += errors;
        figures.latencies_us.extend(latencies);
    }
    figures.seconds = started.elapsed().as_secs_f64();
    figures.latencies_us.sort_unstable();
    figures
}
