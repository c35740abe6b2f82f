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
}

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
    });
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let gateway = gateway.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(request).await) }
            });
            if let Err(error) = http1::Builder::new()
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
                .call(request, |_, body| grpc_web::decode_request(body, encoding))
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
        let authorization = match request.headers().get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|value| value.parse().ok())
                    .ok_or_else(|| Status::unauthenticated("authorization is not ASCII"))?,
            ),
        };
        let body = Limited::new(request.into_body(), self.max_message_bytes)
            .collect()
            .await
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "request body over {} bytes, or cut short",
                    self.max_message_bytes
                ))
            })?
            .to_bytes();
        let message = decode(route, &body)?;
        let answer = bookmesh::deadline::scope(
            Instant::now() + timeout,
            forward::call(route, message.into(), authorization),
        )
        .await?;
        Ok((route, answer))
    }
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
