//! The gateway, the edge of the mesh: browsers and `curl` call every public RPC of book,
//! member, rental and bestbook at `POST /<package.Service>/<Method>`, as JSON (the Connect
//! protocol's unary form, see `connect`) or as gRPC-Web (`grpc_web`), and the gateway calls the services over gRPC
//! through the shared client stack, so a browser's request is one trace end to end.
//!
//! - `routes`: the methods served, read from the contracts' descriptors.
//! - `connect`: JSON in and out, and errors with their code and details.
//! - `grpc_web`: gRPC-Web in and out, for browsers (unary).
//! - `forward`: the encoded request to its upstream, with the caller's token and deadline.
//!
//! The user's `authorization` header goes to the services, which decide (the gateway holds
//! no rights of its own beyond its workload identity); `connect-timeout-ms` becomes the
//! call's deadline, capped by `--request-timeout`.

mod config;
mod connect;
mod forward;
mod grpc_web;
mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookmesh::client::Upstream;
use bookmesh::identity::Identity;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tonic::Status;

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
    /// The services verify user tokens (not the plaintext development mode): a call without
    /// one is refused here, as UNAUTHENTICATED, before it costs them anything.
    requires_token: bool,
}

/// Longest `authorization` header forwarded: the services refuse tokens over 8 KiB, and a
/// header over their header-list limit would be refused as a transport error.
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;
/// Longest `idempotency-key` forwarded (the services' own bound).
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;
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
    let gateway = Arc::new(Gateway {
        routes,
        max_message_bytes: config.max_message_bytes,
        request_timeout: config.request_timeout,
        requires_token: !identity.is_plaintext(),
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
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(request).await) }
            });
            if let Err(error) = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
        // Finished connections are reaped as they go, so the set stays as large as the
        // connections open now.
        while connections.try_join_next().is_some() {}
    }
    // No new connections while the open calls finish.
    drop(listener);
    tracing::info!("stop requested: letting open calls finish");
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
    async fn handle(&self, request: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        // The process is up and serving HTTP (the launcher and probes ask); whether a method
        // works is each service's own health.
        if request.method() == Method::GET && request.uri().path() == "/healthz" {
            return respond(StatusCode::OK, br#"{"status":"ok"}"#.to_vec());
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if let Some(encoding) = grpc_web::Encoding::of(&content_type) {
            return match self
                .call(request, |route, body| {
                    let message = grpc_web::decode_request(body, encoding)?;
                    // Checked here like JSON: a service answers a message it cannot decode
                    // with INTERNAL, which its callers' breakers would count.
                    prost_reflect::DynamicMessage::decode(route.method.input(), message.as_slice())
                        .map_err(|_| {
                            Status::invalid_argument("the message is not the method's request")
                        })?;
                    Ok(message)
                })
                .await
            {
                Ok((_, answer)) => {
                    let mut response =
                        respond(StatusCode::OK, grpc_web::encode_response(&answer, encoding));
                    set_content_type(&mut response, encoding.content_type());
                    response
                }
                Err(status) => {
                    let mut response = respond(StatusCode::OK, Vec::new());
                    response
                        .headers_mut()
                        .extend(grpc_web::error_headers(&status));
                    set_content_type(&mut response, encoding.content_type());
                    response
                }
            };
        }
        let json = content_type.split(';').next().map(str::trim) == Some("application/json");
        let answer = if json {
            self.call(request, |route, body| {
                connect::decode_request(route.method.input(), body)
            })
            .await
            .and_then(|(route, answer)| connect::encode_response(route.method.output(), &answer))
        } else {
            Err(Status::invalid_argument(
                "content-type must be application/json, or application/grpc-web(+proto) or \
                 application/grpc-web-text(+proto)",
            ))
        };
        match answer {
            Ok(json) => respond(StatusCode::OK, json),
            Err(status) => respond(
                connect::http_status(status.code()),
                connect::error_body(&status, &self.routes.pool),
            ),
        }
    }

    /// Calls the method at the request's path with the request message `decode` reads from
    /// the body (JSON against the method's input type; gRPC-Web's message goes as it came,
    /// and the service refuses what is not its request): the route and the encoded answer.
    async fn call(
        &self,
        request: hyper::Request<Incoming>,
        decode: impl FnOnce(&routes::Route, &[u8]) -> Result<Vec<u8>, Status>,
    ) -> Result<(&routes::Route, Bytes), Status> {
        let Some(route) = self.routes.get(request.uri().path()) else {
            return Err(Status::unimplemented(format!(
                "no method at {}: POST /<package.Service>/<Method>, for the services {}",
                request.uri().path(),
                PUBLIC_SERVICES.map(|(name, _)| name).join(", ")
            )));
        };
        if request.method() != Method::POST {
            return Err(Status::unimplemented("methods are called with POST"));
        }
        // gRPC-Web carries the deadline as `grpc-timeout`; Connect as `connect-timeout-ms`.
        let asked = request
            .headers()
            .get("connect-timeout-ms")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .map(Duration::from_millis)
            .or_else(|| {
                request
                    .headers()
                    .get("grpc-timeout")
                    .and_then(|value| value.to_str().ok())
                    .and_then(bookmesh::deadline::parse_grpc_timeout)
            });
        let timeout = asked.map_or(self.request_timeout, |asked| {
            asked.min(self.request_timeout)
        });
        let authorization = forwarded(
            &request,
            header::AUTHORIZATION.as_str(),
            MAX_AUTHORIZATION_BYTES,
        )
        .map_err(|()| {
            Status::unauthenticated("the authorization header is malformed or too large")
        })?;
        if authorization.is_none() && self.requires_token {
            return Err(Status::unauthenticated(
                "sign in: send `authorization: Bearer <token>`",
            ));
        }
        let idempotency_key = forwarded(&request, "idempotency-key", MAX_IDEMPOTENCY_KEY_BYTES)
            .map_err(|()| Status::invalid_argument("idempotency-key is malformed or too long"))?;
        let started = Instant::now();
        // The body counts against the call's budget: a client that sends it slowly holds a
        // connection no longer than its own deadline.
        let body = match tokio::time::timeout(
            timeout,
            Limited::new(request.into_body(), self.max_message_bytes).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                return Err(Status::resource_exhausted(format!(
                    "request body over {} bytes",
                    self.max_message_bytes
                )));
            }
            Ok(Err(_)) => return Err(Status::invalid_argument("request body cut short")),
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "request body not received within the deadline",
                ));
            }
        };
        let timeout = timeout.saturating_sub(started.elapsed());
        let message = decode(route, &body)?;
        let answer = bookmesh::deadline::scope(
            Instant::now() + timeout,
            forward::call(route, message.into(), authorization, idempotency_key),
        )
        .await?;
        Ok((route, answer))
    }
}

/// A header to pass on to the services, if the caller sent it: `Err` when it is not ASCII or
/// longer than `max` bytes.
fn forwarded(
    request: &hyper::Request<Incoming>,
    name: &str,
    max: usize,
) -> Result<Option<tonic::metadata::AsciiMetadataValue>, ()> {
    let Some(value) = request.headers().get(name) else {
        return Ok(None);
    };
    if value.len() > max {
        return Err(());
    }
    value
        .to_str()
        .ok()
        .and_then(|value| value.parse().ok())
        .map(Some)
        .ok_or(())
}

fn set_content_type(response: &mut hyper::Response<Full<Bytes>>, content_type: &'static str) {
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
}

fn respond(status: StatusCode, body: Vec<u8>) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
