//! `bookmesh-launcher`: the local mesh in one command (`make run`).
//!
//! Creates the local PKI on first start (a CA, a certificate per workload, the development
//! token key, under `data/pki/`), starts every service as its own process (as they run in
//! production: separate binaries, separate databases, mTLS between them), prefixes each one's
//! log lines with its name, waits until all report SERVING, prints the endpoints and a few
//! grpcurl commands, and on Ctrl-C or SIGTERM stops them all gracefully (SIGTERM, so each
//! drains its in-flight calls).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use bookmesh::config::IdentityArgs;
use bookmesh::identity::Identity;

/// Starts the bookmesh services locally on their default ports.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Folder holding the service binaries (default: the launcher's own folder, i.e. the
    /// cargo target folder it was built into).
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// Folder for the services' SQLite databases.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,

    /// Host the services listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Longest wait for every service to report SERVING.
    #[arg(long, default_value = "120")]
    ready_timeout_secs: u64,

    /// Longest wait for the services to exit after the stop signal before killing them.
    #[arg(long, default_value = "25")]
    stop_timeout_secs: u64,

    /// Do not start the notification service (Python), even when its environment is ready.
    #[arg(long)]
    without_notification: bool,

    /// The local PKI (`--pki-dir`, created if missing) and the launcher's own identity for its
    /// health checks.
    #[command(flatten)]
    identity: IdentityArgs,
}

/// The repository the launcher was built from: where the notification service's script is.
const REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Every workload the local PKI issues a certificate to: the services, the tools, the
/// launcher's health checks, and the Python feed consumer example.
const WORKLOADS: &[&str] = &[
    "book",
    "member",
    "rental",
    "bestbook",
    "loadgen",
    "check",
    "launcher",
    "python-consumer",
    "gateway",
    "notification",
];

/// One service of the mesh: binary (or, for a service in another language, a script of the
/// repository), port, gRPC service name (empty for the gateway, which speaks HTTP and answers
/// `GET /healthz`), log colour.
struct ServiceSpec {
    name: &'static str,
    binary: &'static str,
    script: Option<&'static str>,
    port: u16,
    grpc_service: &'static str,
    colour: &'static str,
}

/// The notification service's environment (`make notification` prepares it): without it, or
/// without Python, the mesh starts without that service.
const NOTIFICATION_VENV_PYTHON: &str = ".tools/notification-venv/bin/python";

const SERVICES: [ServiceSpec; 6] = [
    ServiceSpec {
        name: "book",
        binary: "book-service",
        script: None,
        port: 50051,
        grpc_service: "bookmesh.book.v1.BookService",
        colour: "\x1b[36m",
    },
    ServiceSpec {
        name: "member",
        binary: "member-service",
        script: None,
        port: 50052,
        grpc_service: "bookmesh.member.v1.MemberService",
        colour: "\x1b[35m",
    },
    ServiceSpec {
        name: "rental",
        binary: "rental-service",
        script: None,
        port: 50053,
        grpc_service: "bookmesh.rental.v1.RentalService",
        colour: "\x1b[33m",
    },
    ServiceSpec {
        name: "bestbook",
        binary: "bestbook-service",
        script: None,
        port: 50054,
        grpc_service: "bookmesh.bestbook.v1.BestBookService",
        colour: "\x1b[32m",
    },
    // The edge: JSON over HTTP for curl and browsers (docs/gateway.md).
    ServiceSpec {
        name: "gateway",
        binary: "gateway-service",
        script: None,
        port: 8080,
        grpc_service: "",
        colour: "\x1b[34m",
    },
    // Written in Python: the polyglot example (services/notification).
    ServiceSpec {
        name: "notification",
        binary: "",
        script: Some("services/notification/run.sh"),
        port: 50055,
        grpc_service: "bookmesh.notification.v1.NotificationService",
        colour: "\x1b[91m",
    },
];

const RESET: &str = "\x1b[0m";

struct Running {
    spec: &'static ServiceSpec,
    child: Child,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("launcher binary has no folder")?
            .to_path_buf(),
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    if !args.identity.insecure_plaintext {
        bookmesh::identity::pki::ensure_local(
            &args.identity.pki_dir,
            &args.identity.trust_domain,
            &args.identity.namespace,
            WORKLOADS,
        )
        .with_context(|| {
            format!(
                "cannot create the local PKI in {}",
                args.identity.pki_dir.display()
            )
        })?;
    }
    let identity = Identity::from_args(&args.identity, "launcher")?;

    let with_notification = !args.without_notification && notification_ready();
    let mut running = Vec::new();
    for spec in SERVICES
        .iter()
        .filter(|spec| with_notification || spec.script.is_none())
    {
        match start(spec, &bin_dir, &args, with_notification) {
            Ok(child) => running.push(Running { spec, child }),
            Err(error) => {
                stop_all(&mut running, Duration::from_secs(args.stop_timeout_secs)).await;
                return Err(error);
            }
        }
    }

    let ready = tokio::select! {
        ready = wait_until_all_serving(&args, &identity, &mut running) => ready,
        () = bookmesh::server::shutdown_signal() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    if let Err(error) = ready {
        eprintln!("launcher: {error:#}; stopping");
        stop_all(&mut running, Duration::from_secs(args.stop_timeout_secs)).await;
        return Err(error);
    }
    print_banner(&args.host, &args.identity, with_notification);

    // Run until asked to stop, or until a service dies on its own (then stop the rest: a
    // half-running mesh only confuses).
    let exited = tokio::select! {
        () = bookmesh::server::shutdown_signal() => None,
        exited = first_exit(&mut running) => Some(exited),
    };
    if let Some((name, status)) = &exited {
        eprintln!("launcher: {name} exited unexpectedly ({status}); stopping the mesh");
    } else {
        eprintln!("launcher: stopping the mesh");
    }
    stop_all(&mut running, Duration::from_secs(args.stop_timeout_secs)).await;
    if exited.is_some() {
        bail!("a service exited unexpectedly");
    }
    eprintln!("launcher: all services stopped");
    Ok(())
}

/// Whether the notification service can start: Python and its environment are there.
fn notification_ready() -> bool {
    let python = std::path::Path::new(REPOSITORY).join(NOTIFICATION_VENV_PYTHON);
    if python.exists() {
        return true;
    }
    let has_python = std::process::Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if has_python {
        eprintln!(
            "launcher: the notification service's environment is not prepared \
             (`make notification`); starting without it"
        );
    } else {
        eprintln!(
            "launcher: Python 3 not found: starting the Rust services without the \
             notification service (services/notification needs Python 3.11)"
        );
    }
    false
}

fn start(
    spec: &'static ServiceSpec,
    bin_dir: &std::path::Path,
    args: &Args,
    with_notification: bool,
) -> anyhow::Result<Child> {
    let binary = match spec.script {
        Some(script) => std::path::Path::new(REPOSITORY).join(script),
        None => bin_dir.join(spec.binary),
    };
    if !binary.exists() {
        bail!(
            "{} not found; build it first (`cargo build --workspace --bins` or `make run`)",
            binary.display()
        );
    }
    let mut command = Command::new(&binary);
    command
        .env("BOOKMESH_LISTEN", format!("{}:{}", args.host, spec.port))
        .env("BOOKMESH_DATA_DIR", &args.data_dir)
        .env("BOOKMESH_LOG_FORMAT", "pretty")
        // Every service finds its certificate in the one local PKI, wherever it was started.
        .env("BOOKMESH_PKI_DIR", absolute(&args.identity.pki_dir))
        .env("BOOKMESH_TRUST_DOMAIN", &args.identity.trust_domain)
        .env("BOOKMESH_NAMESPACE", &args.identity.namespace)
        .env(
            "BOOKMESH_INSECURE_PLAINTEXT",
            args.identity.insecure_plaintext.to_string(),
        )
        // A development mesh: faults may be switched on (`make fault`, docs/faults.md).
        .env("BOOKMESH_FAULTS_ENABLED", "true")
        // Admin HTTP (/metrics, /healthz, /readyz, /faults) on the gRPC port + 1000.
        .env(
            "BOOKMESH_ADMIN_LISTEN",
            format!("{}:{}", args.host, spec.port + 1000),
        )
        .env(
            "BOOKMESH_MEMBER_ENDPOINTS",
            format!("http://{}:{}", args.host, SERVICES[1].port),
        )
        .env(
            "BOOKMESH_RENTAL_ENDPOINTS",
            format!("http://{}:{}", args.host, SERVICES[2].port),
        )
        .env(
            "BOOKMESH_BOOK_ENDPOINTS",
            format!("http://{}:{}", args.host, SERVICES[0].port),
        )
        .env(
            "BOOKMESH_NOTIFICATION_ENDPOINTS",
            format!("http://{}:{}", args.host, SERVICES[5].port),
        )
        // The gateway's mesh view and fault switches read the services' admin ports.
        .env(
            "BOOKMESH_ADMIN_TARGETS",
            SERVICES
                .iter()
                .filter(|service| !service.grpc_service.is_empty())
                .filter(|service| with_notification || service.script.is_none())
                .map(|service| format!("{}={}:{}", service.name, args.host, service.port + 1000))
                .collect::<Vec<_>>()
                .join(","),
        )
        // The console's development sign-in signs with this mesh's own key (the gateway
        // ignores it in the plaintext mode, which has no tokens).
        .env(
            "BOOKMESH_DEV_SIGN_IN",
            (!args.identity.insecure_plaintext).to_string(),
        )
        // Each service names itself in traces; one OTEL_SERVICE_NAME for all would merge them.
        .env_remove("OTEL_SERVICE_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Should the launcher itself die, take the services with it.
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let prefix = format!("{}{:>8} |{RESET} ", spec.colour, spec.name);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_lines(stdout, prefix.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_lines(stderr, prefix));
    }
    Ok(child)
}

async fn forward_lines(stream: impl AsyncRead + Unpin, prefix: String) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{prefix}{line}");
    }
}

async fn wait_until_all_serving(
    args: &Args,
    identity: &Identity,
    running: &mut [Running],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_secs);
    for service in running.iter_mut() {
        let url = format!("http://{}:{}", args.host, service.spec.port);
        loop {
            if let Some(status) = service.child.try_wait()? {
                bail!("{} exited during start-up ({status})", service.spec.name);
            }
            if health(identity, &url, service.spec).await == Some(ServingStatus::Serving) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not SERVING after {}s",
                    service.spec.name,
                    args.ready_timeout_secs
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn health(identity: &Identity, url: &str, spec: &ServiceSpec) -> Option<ServingStatus> {
    if spec.grpc_service.is_empty() {
        return http_health(url).await;
    }
    let channel = tokio::time::timeout(Duration::from_secs(1), identity.channel(url, spec.name))
        .await
        .ok()?
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: spec.grpc_service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// `GET /healthz` on the gateway: SERVING once it answers 200.
async fn http_health(url: &str) -> Option<ServingStatus> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.strip_prefix("http://")?;
    let mut stream = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .ok()?
    .ok()?;
    stream
        .write_all(format!("GET /healthz HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(1), stream.read_to_string(&mut answer))
        .await
        .ok()?
        .ok()?;
    // "HTTP/1.0 200 OK": the status code is the second word.
    (answer.split_whitespace().nth(1) == Some("200")).then_some(ServingStatus::Serving)
}

async fn first_exit(running: &mut [Running]) -> (&'static str, String) {
    let waits = running.iter_mut().map(|service| {
        Box::pin(async move {
            let status = service.child.wait().await;
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            (service.spec.name, status)
        })
    });
    futures::future::select_all(waits).await.0
}

/// SIGTERM to every service (they drain and exit), then SIGKILL to any still running.
async fn stop_all(running: &mut [Running], timeout: Duration) {
    for service in running.iter() {
        if let Some(pid) = service.child.id() {
            // The service may already be gone; nothing to do then.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for service in running.iter_mut() {
        match tokio::time::timeout(timeout, service.child.wait()).await {
            Ok(Ok(status)) => eprintln!("launcher: {} stopped ({status})", service.spec.name),
            Ok(Err(error)) => eprintln!("launcher: {}: {error}", service.spec.name),
            Err(_) => {
                eprintln!(
                    "launcher: {} did not stop in time; killing it",
                    service.spec.name
                );
                let _ = service.child.kill().await;
            }
        }
    }
}

/// `path` from the root, so services started elsewhere find it.
fn absolute(path: &std::path::Path) -> PathBuf {
    std::env::current_dir()
        .map(|dir| dir.join(path))
        .unwrap_or_else(|_| path.to_owned())
}

fn print_banner(host: &str, identity: &IdentityArgs, with_notification: bool) {
    println!();
    println!("bookmesh is up: every service reports SERVING.");
    println!();
    for spec in SERVICES
        .iter()
        .filter(|spec| !spec.grpc_service.is_empty())
        .filter(|spec| with_notification || spec.script.is_none())
    {
        println!(
            "  {:<9} {host}:{}  {:<38} (metrics: http://{host}:{}/metrics)",
            spec.name,
            spec.port,
            spec.grpc_service,
            spec.port + 1000
        );
    }
    println!("  gateway   http://{host}:8080  JSON for curl: POST /<package.Service>/<Method>");
    println!();
    println!(
        "Open the console: http://{host}:8080  (sign in as a librarian, rent a book, watch its saga)"
    );
    println!();
    if identity.insecure_plaintext {
        println!("INSECURE: plaintext, no identities, no authorization (--insecure-plaintext).");
        println!("  grpcurl -plaintext {host}:50052 list");
    } else {
        let ca = identity.pki_dir.join("ca.crt");
        println!(
            "mTLS everywhere; the local CA is {} (a development token: make -s token ROLE=librarian).",
            ca.display()
        );
        println!("Try (grpcurl, with server reflection):");
        println!("  grpcurl -cacert {} {host}:50052 list", ca.display());
        println!(
            "  grpcurl -cacert {} {host}:50052 describe bookmesh.member.v1.MemberService",
            ca.display()
        );
        println!(
            "  grpcurl -cacert {} -H \"authorization: Bearer $(make -s token ROLE=librarian)\" -d '{{\"name\":\"Ada\",\"email\":\"ada@example.org\"}}' {host}:50052 bookmesh.member.v1.MemberService/RegisterMember",
            ca.display()
        );
    }
    println!("Or with curl, through the gateway:");
    println!(
        "  curl -s -H 'content-type: application/json' -H \"authorization: Bearer $(make -s token ROLE=librarian)\" -d '{{}}' http://{host}:8080/bookmesh.book.v1.BookService/ListBooks"
    );
    println!();
    println!("The README walks through a whole rental. Ctrl-C stops everything.");
    println!();
}
