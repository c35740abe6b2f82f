//! The admin HTTP port, separate from gRPC so that scrapers and plain-HTTP probes never
//! compete with traffic: `/metrics` (Prometheus text), `/healthz` (the process runs),
//! `/readyz` (the service can serve: database migrated and answering, not shutting down),
//! and `/faults` (the injected faults, docs/faults.md: `GET /faults`, `PUT /faults/<name>`
//! with a JSON body, `DELETE /faults/<name>`).
//!
//! Switching a fault needs a user token with role `admin` once the service verifies tokens
//! (not in the plaintext development mode, which has no identities at all), and a process
//! started with `--faults-enabled`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;

use crate::auth::Authorizer;
use crate::faults::FaultError;
use crate::readiness::Readiness;

/// Largest fault settings body accepted.
const MAX_BODY_BYTES: usize = 4096;
/// How long a fault's settings may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the admin endpoints answer from.
#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) readiness: Readiness,
    /// Verifies the token of whoever switches a fault; `None` in the plaintext mode.
    pub(crate) authorizer: Option<Arc<Authorizer>>,
}

/// Serves the admin endpoints on `address` until the task is dropped or aborted.
pub(crate) async fn serve(address: SocketAddr, admin: Admin) -> std::io::Result<()> {
    let listener = crate::listener::bind(address).await?;
    tracing::info!(%address, "admin HTTP listening (/metrics, /healthz, /readyz, /faults)");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, say: /metrics and the probes must come back by
                // themselves, without a restart, and without spinning meanwhile.
                tracing::warn!(%error, "admin accept failed; retrying in 100 ms");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.respond(request).await) }
            });
            if let Err(error) = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

impl Admin {
    async fn respond(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        if path == "/faults" || path.starts_with("/faults/") {
            return self.faults(request, &path).await;
        }
        match path.as_str() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                crate::metrics::render(),
            ),
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/readyz" if self.readiness.is_serving() => {
                text(StatusCode::OK, "text/plain", "ready\n".to_owned())
            }
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready\n".to_owned(),
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_owned(),
            ),
        }
    }

    async fn faults(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
        path: &str,
    ) -> hyper::Response<Full<Bytes>> {
        let name = path.strip_prefix("/faults/").unwrap_or_default().to_owned();
        let method = request.method().clone();
        if method == Method::GET && name.is_empty() {
            return json(StatusCode::OK, crate::faults::list());
        }
        if name.is_empty() || (method != Method::PUT && method != Method::DELETE) {
            return problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "GET /faults, PUT /faults/<name> with JSON settings, DELETE /faults/<name>",
            );
        }
        if let Some(refusal) = self.refuse_non_admin(&request) {
            return refusal;
        }
        let outcome = if method == Method::PUT {
            // Within a bound: a client that trickles its body must not hold a connection
            // (and a task) of the admin port for ever.
            let body = match tokio::time::timeout(
                BODY_TIMEOUT,
                Limited::new(request.into_body(), MAX_BODY_BYTES).collect(),
            )
            .await
            {
                Ok(Ok(body)) => body.to_bytes(),
                Ok(Err(_)) => {
                    return problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("fault settings are at most {MAX_BODY_BYTES} bytes"),
                    );
                }
                Err(_) => {
                    return problem(
                        StatusCode::REQUEST_TIMEOUT,
                        "the fault settings did not arrive within 5 s",
                    );
                }
            };
            crate::faults::set(&name, &body)
        } else {
            crate::faults::clear(&name)
        };
        match outcome {
            Ok(()) => {
                if name == crate::faults::FaultKind::DatabaseOutage.name() && method == Method::PUT
                {
                    // At once rather than at the next database check.
                    self.readiness.set_serving(false);
                }
                json(StatusCode::OK, crate::faults::list())
            }
            Err(error @ FaultError::Disabled) => problem(StatusCode::FORBIDDEN, &error.to_string()),
            Err(error @ FaultError::Unknown(_)) => {
                problem(StatusCode::NOT_FOUND, &error.to_string())
            }
            Err(error @ FaultError::Invalid(_)) => {
                problem(StatusCode::BAD_REQUEST, &error.to_string())
            }
        }
    }

    /// A refusal unless the caller's token has the role `admin` (when tokens are verified).
    fn refuse_non_admin(
        &self,
        request: &hyper::Request<hyper::body::Incoming>,
    ) -> Option<hyper::Response<Full<Bytes>>> {
        let authorizer = self.authorizer.as_ref()?;
        let Some(header) = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
        else {
            return Some(problem(
                StatusCode::UNAUTHORIZED,
                "switching a fault needs `authorization: Bearer <token>` with role admin",
            ));
        };
        match authorizer.verify_token(header) {
            Ok(claims) if claims.roles.iter().any(|role| role == "admin") => None,
            Ok(_) => Some(problem(
                StatusCode::FORBIDDEN,
                "switching a fault needs role admin",
            )),
            Err(refusal) => Some(problem(StatusCode::UNAUTHORIZED, refusal.reason())),
        }
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn json(status: StatusCode, value: serde_json::Value) -> hyper::Response<Full<Bytes>> {
    text(status, "application/json", format!("{value}\n"))
}

fn problem(status: StatusCode, message: &str) -> hyper::Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }))
}
