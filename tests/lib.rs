//! Helpers for the workspace-level tests: the service binaries run as real processes.
//!
//! Waits poll with the one `bookmesh::testing::eventually`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A service binary built next to the test executable (`cargo test --workspace` builds them).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target folder");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// A port free on every loopback address right now (bound on 127.0.0.1 and released), never
/// the same twice in one test process: the kernel may hand a released port out again, and two
/// services told to listen on one port would leave one of them dead and the other answering
/// its calls.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let mut handed_out = HANDED_OUT.lock().expect("ports");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A service running as its own process, with its output kept for assertions.
pub struct ServiceProcess {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (plus JSON logs) and keeps every line it prints.
    pub fn spawn(name: &str, binary: &str, env: &[(&str, String)]) -> Self {
        let mut command = Command::new(self::binary(binary));
        command
            .env("BOOKMESH_LOG_FORMAT", "json")
            // The process suites test the mesh's behaviour in the development mode; the
            // security suites pass a PKI and "false" here.
            .env("BOOKMESH_INSECURE_PLAINTEXT", "true")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Self::start(name, command)
    }

    /// Starts `program` (a path, or a name on PATH) with `args` and `env`: a server the tests
    /// need besides the bookmesh binaries (nats-server, say).
    pub fn spawn_program(
        name: &str,
        program: &str,
        args: &[String],
        env: &[(&str, String)],
    ) -> Self {
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Self::start(name, command)
    }

    /// Starts `binary` with `env` and nothing inherited from the test's environment (as a
    /// container starts: only PATH besides what its manifest sets).
    pub fn spawn_with_only(name: &str, binary: &str, env: &[(&str, String)]) -> Self {
        let mut command = Command::new(self::binary(binary));
        command
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Self::start(name, command)
    }

    fn start(name: &str, mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start service process");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// Lines printed so far that contain every needle.
    pub fn count_lines(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    pub fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("process still running");
        kill(Pid::from_raw(pid as i32), signal).expect("send signal");
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// SIGTERM, then waits (at most 20 s) for a clean exit.
    pub async fn stop(mut self) {
        self.signal(Signal::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("service stops within 20 s")
            .expect("wait");
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}

/// A plain HTTP/1.0 GET (for the admin port): status code and body.
pub async fn http_get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(address, "GET", path, &[], "").await
}

/// A plain HTTP/1.0 request with `headers` and `body` (for the admin port's `/faults`):
/// status code and body.
pub async fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of the first series of `/metrics` at `admin` that starts with `series`
/// (`name{labels}`), if it is there.
pub async fn metric_value(admin: &str, series: &str) -> Option<f64> {
    let (_, metrics) = http_get(admin, "/metrics").await.ok()?;
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

impl ServiceProcess {
    /// SIGTERM, then waits (at most `within`) for the process to exit: its exit status and
    /// how long it took. Its output stays readable through [`Self::lines`].
    pub async fn stop_and_time(
        &mut self,
        within: Duration,
    ) -> (std::process::ExitStatus, Duration) {
        let started = std::time::Instant::now();
        self.signal(Signal::SIGTERM);
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {within:?}", self.name))
            .expect("wait");
        (status, started.elapsed())
    }

    /// Waits (at most `within`) for the process to exit by itself: its exit status.
    pub async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {within:?}", self.name))
            .expect("wait")
    }

    /// SIGKILL: a crash, no drain, no cleanup.
    pub async fn crash(mut self) {
        self.signal(Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}
