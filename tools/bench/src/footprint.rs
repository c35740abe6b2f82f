//! `bookmesh-bench footprint`: what each Rust service costs before it serves anything: the
//! time from start to SERVING on a fresh SQLite database (migrations included), its resident
//! memory once idle, and its binary's size.
//!
//! Each service starts alone, in plaintext, on a fresh database, with its upstreams pointing
//! nowhere (their clients are lazy; the event consumers retry in the background, as they would
//! while a peer is down). Start to SERVING is measured from the spawn to the first health
//! check that answers SERVING, polled every millisecond; it is reported as the median of
//! `--rounds` starts. Idle RSS is read from `/proc/<pid>/status` after `--idle` of quiet.
//!
//! Image sizes come from the local image store (`docker image inspect`, or `$DOCKER`) for the
//! images `make images` builds (`$IMAGE_REPOSITORY/<name>:$IMAGE_TAG`, bookmesh/book:dev…):
//! build them first; without Docker or without the images the column says so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use super::{binaries, stop};

#[derive(Debug, clap::Args)]
pub struct FootprintArgs {
    /// Starts per service (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Quiet time before the resident memory is read.
    #[arg(long, value_parser = bookmesh::config::parse_duration, default_value = "3s")]
    idle: Duration,
    /// Folder of the service binaries (default: this binary's own folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

const SERVICES: [&str; 5] = [
    "book-service",
    "member-service",
    "rental-service",
    "bestbook-service",
    "gateway-service",
];

pub async fn run(args: FootprintArgs) -> anyhow::Result<()> {
    let bin_dir = binaries(args.bin_dir.clone())?;
    let work = tempfile::tempdir()?;
    let mut rows = Vec::new();
    println!();
    println!(
        "Footprint: start to SERVING on a fresh SQLite database (median of {} starts), RSS after {:?} idle, binary size",
        args.rounds, args.idle
    );
    println!(
        "{:<18} {:>14} {:>12} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "service",
        "to SERVING ms",
        "idle RSS MB",
        "own MB",
        "file MB",
        "binary MB",
        "stripped",
        "image MB"
    );
    let mut images_missing = Vec::new();
    // The names `make images` gives them, after the same variables.
    let repository = std::env::var("IMAGE_REPOSITORY").unwrap_or_else(|_| "bookmesh".into());
    let tag = std::env::var("IMAGE_TAG").unwrap_or_else(|_| "dev".into());
    let docker = std::env::var("DOCKER").unwrap_or_else(|_| "docker".into());
    for service in SERVICES {
        let binary = bin_dir.join(service);
        if !binary.exists() {
            bail!("{} not found: build it first", binary.display());
        }
        let mut starts = Vec::new();
        let mut rss_kb = Resident::default();
        for round in 0..args.rounds {
            let dir = work.path().join(format!("{service}-{round}"));
            std::fs::create_dir_all(&dir)?;
            let port = free_port()?;
            let started = Instant::now();
            let mut child = spawn(&binary, &dir, port)?;
            let ready = serving(service, port, &mut child).await;
            let elapsed = started.elapsed();
            if let Err(error) = ready {
                stop(&mut child).await;
                return Err(error.context(service));
            }
            starts.push(elapsed.as_secs_f64() * 1000.0);
            // The last start's process, left idle, gives the resident memory.
            if round + 1 == args.rounds {
                tokio::time::sleep(args.idle).await;
                rss_kb = child.id().and_then(resident_kb).unwrap_or_default();
            }
            stop(&mut child).await;
        }
        starts.sort_by(f64::total_cmp);
        let median = starts[starts.len() / 2];
        let size_mb = std::fs::metadata(&binary)?.len() as f64 / (1024.0 * 1024.0);
        let mb = |kb: u64| kb as f64 / 1024.0;
        let (rss_mb, own_mb, file_mb) = (mb(rss_kb.total), mb(rss_kb.anonymous), mb(rss_kb.file));
        let stripped = stripped_mb(&binary, work.path());
        let image = image_name(&repository, &tag, service);
        let image_size = image_mb(&docker, &image);
        if image_size.is_none() {
            images_missing.push(image);
        }
        let or_dash = |mb: Option<f64>| mb.map_or_else(|| "-".to_owned(), |mb| format!("{mb:.1}"));
        println!(
            "{service:<18} {median:>14.1} {rss_mb:>12.1} {own_mb:>9.1} {file_mb:>9.1} {size_mb:>10.1} {:>10} {:>10}",
            or_dash(stripped),
            or_dash(image_size)
        );
        rows.push(serde_json::json!({
            "service": service,
            "start_to_serving_ms": (median * 10.0).round() / 10.0,
            "start_to_serving_ms_all": starts,
            "idle_rss_mb": (rss_mb * 10.0).round() / 10.0,
            "idle_rss_own_mb": (own_mb * 10.0).round() / 10.0,
            "idle_rss_file_mb": (file_mb * 10.0).round() / 10.0,
            "binary_mb": (size_mb * 10.0).round() / 10.0,
            "stripped_mb": stripped.map(|mb| (mb * 10.0).round() / 10.0),
            "image_mb": image_size.map(|mb| (mb * 10.0).round() / 10.0),
        }));
    }
    if !images_missing.is_empty() {
        println!(
            "(image sizes: {} not in the local image store, or no Docker here: `make images` builds them)",
            images_missing.join(", ")
        );
    }
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let document = serde_json::json!({ "bench": "footprint", "services": rows });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(binary: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    command
        .env("BOOKMESH_LISTEN", format!("127.0.0.1:{port}"))
        .env("BOOKMESH_DATA_DIR", dir)
        .env("BOOKMESH_INSECURE_PLAINTEXT", "true")
        .env("BOOKMESH_BOOK_ENDPOINTS", "http://127.0.0.1:1")
        .env("BOOKMESH_MEMBER_ENDPOINTS", "http://127.0.0.1:1")
        .env("BOOKMESH_RENTAL_ENDPOINTS", "http://127.0.0.1:1")
        .env("BOOKMESH_BESTBOOK_ENDPOINTS", "http://127.0.0.1:1")
        .env("BOOKMESH_NOTIFICATION_ENDPOINTS", "http://127.0.0.1:1")
        .env("BOOKMESH_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    Ok(command.spawn()?)
}

/// Waits until the service serves: gRPC health SERVING, or the gateway's `/healthz` 200.
async fn serving(service: &str, port: u16, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("exited during start-up ({status})");
        }
        let up = if service == "gateway-service" {
            healthz(port).await
        } else {
            grpc_serving(port).await
        };
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not SERVING within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn grpc_serving(port: u16) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map(|endpoint| endpoint.connect_timeout(Duration::from_millis(100)))
    else {
        return false;
    };
    match channel.connect().await {
        Ok(channel) => super::tonic_health_ready(channel).await,
        Err(_) => false,
    }
}

async fn healthz(port: u16) -> bool {
    super::admin_get(port, "/healthz")
        .await
        .is_some_and(|(status, _)| status == 200)
}

/// The process's resident set size in KiB (`VmRSS` in `/proc/<pid>/status`).
fn resident_kb(pid: u32) -> Option<Resident> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
    };
    Some(Resident {
        total: field("VmRSS")?,
        anonymous: field("RssAnon").unwrap_or_default(),
        file: field("RssFile").unwrap_or_default(),
    })
}

/// Resident memory in KiB: the total, the process's own (heap, stacks) and the pages of
/// files it maps (mostly its binary's code, shared by replicas on one node).
#[derive(Default, Clone, Copy)]
struct Resident {
    total: u64,
    anonymous: u64,
    file: u64,
}

/// The size in MiB of `binary` stripped of its symbols, as the images ship it; `None` when
/// `strip` is not installed.
fn stripped_mb(binary: &Path, work: &Path) -> Option<f64> {
    let copy = work.join("stripped");
    std::fs::copy(binary, &copy).ok()?;
    let stripped = std::process::Command::new("strip")
        .arg(&copy)
        .status()
        .ok()?
        .success();
    let size = std::fs::metadata(&copy).ok()?.len() as f64 / (1024.0 * 1024.0);
    let _ = std::fs::remove_file(&copy);
    stripped.then_some(size)
}

/// The image `make images` builds for `service` (book-service → `bookmesh/book:dev`).
fn image_name(repository: &str, tag: &str, service: &str) -> String {
    let name = service.strip_suffix("-service").unwrap_or(service);
    format!("{repository}/{name}:{tag}")
}

/// The image's size in MiB as the local image store reports it (uncompressed, all layers);
/// `None` without `docker` (or another engine's command with the same CLI) or the image.
fn image_mb(docker: &str, image: &str) -> Option<f64> {
    let output = std::process::Command::new(docker)
        .args(["image", "inspect", "--format", "{{.Size}}", image])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let bytes: u64 = String::from_utf8(output.stdout).ok()?.trim().parse().ok()?;
    Some(bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_named_as_make_images_names_them() {
        assert_eq!(
            image_name("bookmesh", "dev", "book-service"),
            "bookmesh/book:dev"
        );
        assert_eq!(
            image_name("registry.example/bm", "abc123", "gateway-service"),
            "registry.example/bm/gateway:abc123"
        );
    }

    #[test]
    fn the_image_store_s_size_is_read_in_mib() {
        // A stand-in for `docker` that knows one image, answering as `docker image inspect
        // --format {{.Size}}` does.
        let dir = tempfile::tempdir().expect("dir");
        let docker = dir.path().join("docker");
        std::fs::write(
            &docker,
            "#!/bin/sh\n[ \"$5\" = bookmesh/book:dev ] && echo 52428800 && exit 0\n\
             echo 'Error: No such image' >&2; exit 1\n",
        )
        .expect("script");
        std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let docker = docker.to_str().expect("utf-8 path");
        assert_eq!(image_mb(docker, "bookmesh/book:dev"), Some(50.0));
        assert_eq!(image_mb(docker, "bookmesh/member:dev"), None);
        // No image store at all: no size, not an error. (In this test, not one of its own:
        // another test's process spawned while the script above is open for writing would
        // make running it fail with "text file busy".)
        assert_eq!(image_mb("/nonexistent/docker", "bookmesh/book:dev"), None);
    }
}
