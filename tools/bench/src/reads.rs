//! `bookmesh-bench reads`: what the full stack costs a read, against the limit.
//!
//! The limit is a bare tonic server (this binary's `bare-server`) answering GetBook with the
//! same four-field-and-more book message a real book-service returns, from memory, with none of
//! bookmesh's layers. book-service then serves GetBook and ListBooks from its database (SQLite
//! by default, PostgreSQL with `BENCH_DB=postgres`) through its whole server stack. Each way
//! is loaded the same: a closed loop of `--concurrency` calls in flight over `--connections`
//! warm HTTP/2 connections. The server runs on core 0 and the load on core 1 when the machine
//! has two (`taskset`), so they do not take turns on one core.
//!
//! Ways take turns for `--rounds` rounds, and each is reported by its median round with the
//! spread beside it (the same method as `security`, for the same reason: one round on a
//! shared machine can be off by ten per cent). Output: a table of ratios (way ÷ bare) with the
//! absolute figures, `--json` and `--svg` files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use bookmesh::proto::book::v1::book_service_server::{BookService, BookServiceServer};
use bookmesh::proto::book::v1::{
    Book, BookStatus, GetBookRequest, GetBookResponse, ListBooksRequest, ListBooksResponse,
    RegisterBookRequest, RegisterBookResponse,
};
use tokio::process::{Child, Command};
use tonic::{Request, Response, Status};

use super::{Figures, Op, binaries, load_op, stop, tonic_health_ready};

#[derive(Debug, clap::Args)]
pub struct ReadsArgs {
    /// How long each way is loaded per round (after a warm-up of a tenth of it).
    #[arg(long, value_parser = bookmesh::config::parse_duration, default_value = "10s")]
    duration: Duration,
    /// HTTP/2 connections the load is spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight at once (closed loop): 64, as the targets are stated.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Rounds: each way runs once per round, in turns.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Folder of the book-service binary (default: this binary's own folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The database behind book-service: `sqlite`, or `postgres` (the local server, a fresh
    /// database).
    #[arg(long, env = "BENCH_DB", default_value = "sqlite")]
    db: String,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a bar chart (throughput and p99 per way) as SVG here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

/// A way of answering reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Bare,
    GetBook,
    ListBooks,
    /// GetBook from the benchmark build of book-service with these server layers switched
    /// off (`BOOKMESH_BENCH_LAYERS_OFF`): what they cost is the difference to GetBook.
    GetBookWithout(&'static str),
}

/// The benchmark build of book-service (`bench-layer-switches`), beside the others; `make
/// bench` builds it. Without it, the layer ways are left out.
const LAYERS_BINARY: &str = "book-service-bench-layers";

/// The layer ways: each layer alone, then all of them.
const LAYER_WAYS: [&str; 4] = [
    "readiness",
    "metrics",
    "tracing",
    "readiness,metrics,tracing",
];

impl Way {
    fn label(self) -> String {
        match self {
            Self::Bare => "bare tonic, GetBook from memory".into(),
            Self::GetBook => "book-service GetBook".into(),
            Self::ListBooks => "book-service ListBooks (20)".into(),
            Self::GetBookWithout(off) if off.contains(',') => {
                "GetBook, without readiness, metrics, tracing".into()
            }
            Self::GetBookWithout(off) => format!("GetBook, without {off}"),
        }
    }
}

/// The book every way answers with (and the saga bench rents).
pub(crate) fn a_book() -> RegisterBookRequest {
    the_book()
}

/// The book every way answers with.
fn the_book() -> RegisterBookRequest {
    RegisterBookRequest {
        title: "The Left Hand of Darkness".into(),
        author: "Ursula K. Le Guin".into(),
        isbn: "9780441478125".into(),
        publisher: "Ace".into(),
        published_on: "1969-03-01".into(),
        classification: "Fiction".into(),
        location: "Bench shelf".into(),
    }
}

/// The bare server: GetBook answers one book from memory; nothing else is served.
struct Bare {
    book: Book,
}

#[tonic::async_trait]
impl BookService for Bare {
    async fn register_book(
        &self,
        _: Request<RegisterBookRequest>,
    ) -> Result<Response<RegisterBookResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }

    async fn get_book(
        &self,
        _: Request<GetBookRequest>,
    ) -> Result<Response<GetBookResponse>, Status> {
        Ok(Response::new(GetBookResponse {
            book: Some(self.book.clone()),
        }))
    }

    async fn list_books(
        &self,
        _: Request<ListBooksRequest>,
    ) -> Result<Response<ListBooksResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

/// Serves the bare server on `listen` until killed.
pub async fn serve_bare(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let registered = the_book();
    let book = Book {
        book_id: "01a21000-0000-7000-8000-000000000001".into(),
        title: registered.title,
        author: registered.author,
        isbn: registered.isbn,
        publisher: registered.publisher,
        published_on: registered.published_on,
        classification: registered.classification,
        location: registered.location,
        status: BookStatus::Available.into(),
        ..Default::default()
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(BookServiceServer::new(Bare { book }))
        .serve(listen)
        .await?;
    Ok(())
}

/// Figures of one way: each round's throughput, and every call's latency.
struct Row {
    way: Way,
    throughputs: Vec<f64>,
    total: Figures,
}

pub async fn run(args: ReadsArgs) -> anyhow::Result<()> {
    let bin_dir = binaries(args.bin_dir.clone())?;
    let work = tempfile::tempdir()?;
    // Before pinning: afterwards this process sees only its own core.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let pinned = pin_load_to_core(1);
    let mut ways = vec![Way::Bare, Way::GetBook, Way::ListBooks];
    if bin_dir.join(LAYERS_BINARY).exists() {
        ways.extend(LAYER_WAYS.map(Way::GetBookWithout));
    } else {
        println!(
            "({LAYERS_BINARY} not built: the cost of each server layer is not measured; make bench builds it)"
        );
    }
    let mut rows: Vec<Row> = ways
        .into_iter()
        .map(|way| Row {
            way,
            throughputs: Vec::new(),
            total: Figures::default(),
        })
        .collect();
    for round in 0..args.rounds {
        for row in &mut rows {
            let figures = run_way(row.way, &args, &bin_dir, work.path(), round)
                .await
                .with_context(|| row.way.label())?;
            row.throughputs.push(figures.throughput());
            row.total.merge(figures);
        }
    }
    for row in &mut rows {
        row.throughputs.sort_by(f64::total_cmp);
        row.total.latencies_us.sort_unstable();
    }
    let median = |throughputs: &[f64]| throughputs[throughputs.len() / 2];
    let bare = median(&rows[0].throughputs);
    println!();
    println!(
        "Reads, {} calls in flight over {} connections, {} rounds of {:?} per way, database {}, {}",
        args.concurrency,
        args.connections,
        args.rounds,
        args.duration,
        args.db,
        if pinned {
            "server on core 0, load on core 1"
        } else {
            "server and load share the cores"
        }
    );
    println!(
        "{:<46} {:>10} {:>15} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "way", "calls/s", "rounds min-max", "÷ bare", "p50 ms", "p99 ms", "max ms", "errors"
    );
    let mut json_rows = Vec::new();
    for row in &rows {
        let throughput = median(&row.throughputs);
        let ratio = throughput / bare;
        println!(
            "{:<46} {:>10.0} {:>15} {:>7.0}% {:>8.2} {:>8.2} {:>8.2} {:>7}",
            row.way.label(),
            throughput,
            format!(
                "{:.0}-{:.0}",
                row.throughputs[0],
                row.throughputs[row.throughputs.len() - 1]
            ),
            100.0 * ratio,
            row.total.percentile(0.50),
            row.total.percentile(0.99),
            row.total.percentile(1.0),
            row.total.errors
        );
        json_rows.push(serde_json::json!({
            "way": row.way.label(),
            "calls_per_second": throughput.round(),
            "rounds_min": row.throughputs[0].round(),
            "rounds_max": row.throughputs[row.throughputs.len() - 1].round(),
            "ratio_to_bare": (ratio * 1000.0).round() / 1000.0,
            "p50_ms": row.total.percentile(0.50),
            "p99_ms": row.total.percentile(0.99),
            "max_ms": row.total.percentile(1.0),
            "errors": row.total.errors,
        }));
    }
    if let Some(path) = &args.json {
        let document = serde_json::json!({
            "bench": "reads",
            "concurrency": args.concurrency,
            "connections": args.connections,
            "rounds": args.rounds,
            "seconds_per_round": args.duration.as_secs_f64(),
            "database": args.db,
            "pinned": pinned,
            "cores": cores,
            "ways": json_rows,
        });
        write(path, serde_json::to_string_pretty(&document)?.as_bytes())?;
    }
    if let Some(path) = &args.svg {
        write(path, chart(&rows, median).as_bytes())?;
    }
    if rows
        .iter()
        .any(|row| row.total.errors > 0 || row.total.calls == 0)
    {
        bail!("calls failed: the figures are not comparable");
    }
    Ok(())
}

fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Pins this process (the load) to `core` when the machine has more than one, so the server
/// pinned to core 0 does not compete with it. Whether it did.
fn pin_load_to_core(core: usize) -> bool {
    if std::thread::available_parallelism().map_or(1, std::num::NonZero::get) < 2 {
        return false;
    }
    let mut set = nix::sched::CpuSet::new();
    set.set(core).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
}

async fn run_way(
    way: Way,
    args: &ReadsArgs,
    bin_dir: &Path,
    work: &Path,
    round: u32,
) -> anyhow::Result<Figures> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = start(way, args, bin_dir, work, port, round)?;
    let result = async {
        let channels = connect(&url, args.connections).await?;
        let op = match way {
            Way::Bare => Op::GetBook("01a21000-0000-7000-8000-000000000001".into()),
            Way::GetBook | Way::ListBooks | Way::GetBookWithout(_) => {
                let mut client =
                    bookmesh::proto::book::v1::book_service_client::BookServiceClient::new(
                        channels[0].clone(),
                    );
                let mut first = None;
                // A page's worth of books for ListBooks; GetBook reads the first.
                for _ in 0..20 {
                    let book = client
                        .register_book(the_book())
                        .await?
                        .into_inner()
                        .book
                        .context("book")?;
                    first.get_or_insert(book.book_id);
                }
                match way {
                    Way::ListBooks => Op::ListBooks,
                    _ => Op::GetBook(first.context("a book")?),
                }
            }
        };
        load_op(&channels, &op, None, args.duration / 10, args.concurrency).await;
        Ok::<_, anyhow::Error>(load_op(&channels, &op, None, args.duration, args.concurrency).await)
    }
    .await;
    stop(&mut server).await;
    result
}

/// The server of `way`, on core 0 when `taskset` is there and the machine has two cores.
fn start(
    way: Way,
    args: &ReadsArgs,
    bin_dir: &Path,
    work: &Path,
    port: u16,
    round: u32,
) -> anyhow::Result<Child> {
    let (binary, arguments): (PathBuf, Vec<String>) = match way {
        Way::Bare => (
            std::env::current_exe()?,
            vec![
                "bare-server".into(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
            ],
        ),
        Way::GetBook | Way::ListBooks => (bin_dir.join("book-service"), Vec::new()),
        Way::GetBookWithout(_) => (bin_dir.join(LAYERS_BINARY), Vec::new()),
    };
    if !binary.exists() {
        bail!("{} not found: build it first", binary.display());
    }
    let pin = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) >= 2
        && Path::new("/usr/bin/taskset").exists();
    let mut command = if pin {
        let mut command = Command::new("/usr/bin/taskset");
        command.arg("-c").arg("0").arg(&binary);
        command
    } else {
        Command::new(&binary)
    };
    command.args(&arguments);
    let database = match args.db.as_str() {
        "sqlite" => format!(
            "sqlite://{}?mode=rwc",
            work.join(format!("book-{port}.db")).display()
        ),
        // A fresh database per run and way, on the local server.
        "postgres" => fresh_postgres(&format!("bench_{}_{round}_{port}", std::process::id()))?,
        other => bail!("--db must be sqlite or postgres, not {other}"),
    };
    command
        .env("BOOKMESH_LISTEN", format!("127.0.0.1:{port}"))
        .env("BOOKMESH_DATABASE_URL", database)
        .env("BOOKMESH_INSECURE_PLAINTEXT", "true")
        .env("BOOKMESH_RENTAL_ENDPOINTS", "http://127.0.0.1:1")
        .env("BOOKMESH_MAX_CONCURRENT_REQUESTS", "4096")
        .env("BOOKMESH_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .env(
            "BOOKMESH_BENCH_LAYERS_OFF",
            match way {
                Way::GetBookWithout(off) => off,
                _ => "",
            },
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    Ok(command.spawn()?)
}

/// Creates the database `name` on the local PostgreSQL server; its URL.
pub(crate) fn fresh_postgres(name: &str) -> anyhow::Result<String> {
    let created = std::process::Command::new("psql")
        .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .stdout(Stdio::null())
        .status()
        .context("running psql")?;
    if !created.success() {
        bail!("cannot create the PostgreSQL database {name}");
    }
    Ok(format!("postgres://postgres@127.0.0.1:5432/{name}"))
}

/// `connections` plaintext channels, each connected and its server SERVING.
async fn connect(url: &str, connections: usize) -> anyhow::Result<Vec<tonic::transport::Channel>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut channels = Vec::with_capacity(connections);
    while channels.len() < connections {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?;
        if let Ok(channel) = endpoint.connect().await
            && tonic_health_ready(channel.clone()).await
        {
            channels.push(channel);
            continue;
        }
        if std::time::Instant::now() > deadline {
            bail!("the server at {url} did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(channels)
}

/// A bar chart: throughput per way (bars, with the share of bare tonic), and p99 beside it.
fn chart(rows: &[Row], median: impl Fn(&[f64]) -> f64) -> String {
    let width = 880.0;
    let bar_height = 28.0;
    let left = 330.0;
    let top = 40.0;
    let height = top + rows.len() as f64 * (bar_height + 14.0) + 30.0;
    let bare = median(&rows[0].throughputs).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="22" font-size="15" font-weight="bold">Reads: calls/s (share of bare tonic) and p99</text>
"##
    );
    for (i, row) in rows.iter().enumerate() {
        let throughput = median(&row.throughputs);
        let y = top + i as f64 * (bar_height + 14.0);
        let length = (width - left - 270.0) * (throughput / bare).min(1.0);
        let colour = if row.way == Way::Bare {
            "#9aa5b1"
        } else {
            "#2563eb"
        };
        let _ = write!(
            svg,
            r#"<text x="10" y="{ty}">{label}</text>
<rect x="{left}" y="{y}" width="{length:.1}" height="{bar_height}" fill="{colour}"/>
<text x="{tx:.1}" y="{ty}">{throughput:.0}/s ({share:.0}%), p99 {p99:.2} ms</text>
"#,
            ty = y + bar_height * 0.65,
            label = row.way.label(),
            tx = left + length + 6.0,
            share = 100.0 * throughput / bare,
            p99 = row.total.percentile(0.99),
        );
    }
    svg.push_str("</svg>\n");
    svg
}
