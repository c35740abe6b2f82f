//! The gateway, the edge of the mesh: browsers and `curl` call every public RPC of book,
//! member, rental and bestbook at `POST /<package.Service>/<Method>`, as JSON (the Connect
//! protocol's unary form, see `connect`) or as gRPC-Web (`grpc_web`, unary and server
//! streaming), and the gateway calls the services over gRPC through the shared client stack,
//! so a browser's request is one trace end to end. It also serves the console.
//!
//! - `routes`: the methods served, read from the contracts' descriptors.
//! - `rpc`: a call read, checked and forwarded; `connect`: JSON in and out, and errors with
//!   their code and details; `grpc_web`: gRPC-Web frames; `forward`: the encoded request to
//!   its upstream, with the caller's token and deadline.
//! - `console`: the console's files (`GET /`), built into the binary.
//! - `sign_in`: the development sign-in of `make run` (`POST /auth/dev-token`).
//! - `mesh` and `faults`: the console's mesh view and fault switches, from the services'
//!   admin ports (`admin`).
//!
//! The user's `authorization` header goes to the services, which decide (the gateway holds
//! no rights of its own beyond its workload identity); `connect-timeout-ms` or `grpc-timeout`
//! becomes the call's deadline, capped by `--request-timeout` (`--stream-timeout` for
//! streams).

mod admin;
mod config;
mod connect;
mod console;
mod faults;
mod forward;
mod grpc_web;
mod mesh;
mod reply;
mod routes;
mod rpc;
mod sign_in;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bookmesh::client::Upstream;
use bookmesh::identity::Identity;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
pub use routes::PUBLIC_SERVICES;

/// Why the gateway could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

struct Gateway {
    routes: routes::Routes,
    max_message_bytes: usize,
    request_timeout: Duration,
    stream_timeout: Duration,
    /// The services verify user tokens (not the plaintext development mode): a call without
    /// one is refused here, as UNAUTHENTICATED, before it costs them anything.
    requires_token: bool,
    /// Turns true when the gateway stops: open streams end, so the drain does not wait for
    /// them.
    stopping: watch::Receiver<bool>,
    console: console::Console,
    sign_in: Option<sign_in::DevSignIn>,
    mesh: mesh::MeshView,
    faults: faults::FaultSwitches,
}

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of request headers buffered per connection.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The process's `main`: logging, the configured address, served until SIGINT or SIGTERM; an
/// error is one log line and exit status 1.
pub async fn main(config: Config) -> std::process::ExitCode {
    let _telemetry = bookmesh::service::init_telemetry("gateway", config.log_format);
    tracing::info!(config = ?config, "gateway-service configuration");
    let served = match TcpListener::bind(config.listen).await {
        Ok(listener) => serve(config, listener).await,
        Err(error) => Err(error.into()),
    };
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "gateway-service stopped with an error");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Serves on `listener` until SIGINT or SIGTERM.
pub async fn serve(config: Config, listener: TcpListener) -> Result<(), GatewayError> {
    serve_until(config, listener, bookmesh::server::shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` completes, then lets open calls finish (at most
/// `--request-timeout`).
pub async fn serve_until(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let identity = Identity::from_args(&config.identity, "gateway")
        .map_err(|error| GatewayError::Config(format!("identity: {error}")))?;
    let routes = routes::Routes::new(|workload| {
        let upstream = config.upstream(workload)?;
        Upstream::new(upstream, &identity)
            .map(Arc::new)
            .map_err(|error| format!("{workload}: {error}"))
    })
    .map_err(GatewayError::Config)?;
    tracing::info!(
        address = ?listener.local_addr().ok(),
        methods = routes.paths().len(),
        "gateway listening: POST /<package.Service>/<Method> with JSON"
    );
    let admin_targets =
        Arc::new(admin::AdminTargets::parse(&config.admin_targets).map_err(GatewayError::Config)?);
    let sign_in = if config.dev_sign_in {
        let auth = bookmesh::config::AuthArgs::default();
        let sign_in = sign_in::DevSignIn::new(
            &config.identity.pki_dir,
            &auth.token_issuer,
            &auth.token_audience,
        )
        .map_err(GatewayError::Config)?;
        tracing::warn!(
            "DEVELOPMENT sign-in is on: POST /auth/dev-token signs tokens for any role with \
             the local development key"
        );
        Some(sign_in)
    } else {
        None
    };
    let (stop, stopping) = watch::channel(false);
    let gateway = Arc::new(Gateway {
        routes,
        max_message_bytes: config.max_message_bytes,
        request_timeout: config.request_timeout,
        stream_timeout: config.stream_timeout,
        requires_token: !identity.is_plaintext(),
        stopping: stopping.clone(),
        console: console::Console::new(config.console_dir.clone()),
        sign_in,
        mesh: mesh::MeshView::new(admin_targets.clone()),
        faults: faults::FaultSwitches::new(admin_targets, !identity.is_plaintext()),
    });
    // One slot per open connection: past --max-connections a new one is closed at once, so
    // a flood of idle sockets cannot exhaust the process's descriptors or memory.
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, say: the listener stays readable, so retrying at
                    // once would spin. Wait a moment, as the gRPC servers do.
                    tracing::warn!(%error, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("connection limit reached: closing a new connection");
            continue;
        };
        let gateway = gateway.clone();
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(request).await) }
            });
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = async {
                    // The guard `wait_for` returns must not live across an await.
                    let _ = stopping.wait_for(|stop| *stop).await;
                } => {
                    // Finish the request in progress (a stream ends by itself), then close
                    // instead of waiting on an idle keep-alive connection.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
        // Finished connections are reaped as they go, so the set stays as large as the
        // connections open now.
        while connections.try_join_next().is_some() {}
    }
    // No new connections while the open calls finish; streams end now.
    drop(listener);
    tracing::info!("stop requested: letting open calls finish");
    let _ = stop.send(true);
    let drained = tokio::time::timeout(config.request_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
    Ok(())
}

impl Gateway {
    async fn handle(&self, request: hyper::Request<Incoming>) -> reply::Response {
        let path = request.uri().path();
        let method = request.method();
        // The process is up and serving HTTP (the launcher and probes ask); whether a method
        // works is each service's own health.
        if path == "/healthz" && method == Method::GET {
            return reply::json(StatusCode::OK, r#"{"status":"ok"}"#);
        }
        if path == "/auth/config" && method == Method::GET {
            return reply::json_value(
                StatusCode::OK,
                &serde_json::json!({
                    "dev_sign_in": self.sign_in.is_some(),
                    "tokens_required": self.requires_token,
                }),
            );
        }
        if path == "/auth/dev-token" {
            return match (&self.sign_in, method == Method::POST) {
                // Only for a page of this machine: a site elsewhere that rebinds its name to
                // 127.0.0.1 must not get staff tokens from a developer's gateway.
                (Some(_), true) if !sign_in::from_this_machine(&request) => reply::error(
                    StatusCode::FORBIDDEN,
                    "permission_denied",
                    "development sign-in answers pages served from localhost only",
                ),
                (Some(sign_in), true) => sign_in.issue(request).await,
                (Some(_), false) => reply::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "unimplemented",
                    "POST /auth/dev-token",
                ),
                (None, _) => reply::error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "development sign-in is off: sign in with the identity provider",
                ),
            };
        }
        if path.starts_with("/api/") && self.requires_token && !has_bearer(&request) {
            // The mesh's replicas and faults are operators' business: not for anonymous
            // callers at the edge (each service still checks a fault switch's token itself).
            return reply::error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "sign in: send `authorization: Bearer <token>`",
            );
        }
        if path == "/api/mesh" && method == Method::GET {
            return self.mesh.answer().await;
        }
        if path == "/api/faults" || path.starts_with("/api/faults/") {
            return self.faults.answer(request).await;
        }
        // Every method of the contracts is a POST to a path with a dot in its first part
        // (`/bookmesh.book.v1.BookService/GetBook`); a GET of anything else is the console, and
        // so is a HEAD (hyper sends its headers without the body), as `curl -I` expects.
        if (method == Method::GET || method == Method::HEAD)
            && !path.starts_with("/api/")
            && self.routes.get(path).is_none()
        {
            return self.console.serve(path).await;
        }
        // A span per call that continues the browser's `traceparent` (or starts a trace):
        // the calls to the services are its children, so the request is one trace end to end.
        let name = self
            .routes
            .get(path)
            .map_or("unknown", |route| route.span_name);
        let traceparent = request
            .headers()
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        bookmesh::service::in_http_server_span(name, traceparent.as_deref(), self.rpc(request))
            .await
    }
}

/// Whether the request carries a bearer token (the services verify it).
fn has_bearer(request: &hyper::Request<Incoming>) -> bool {
    request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer "))
}
