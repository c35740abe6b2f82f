//! The admin HTTP port, separate from gRPC so that scrapers and plain-HTTP probes never
//! compete with traffic: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (the service can serve: database migrated and answering, not shutting down).

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::readiness::Readiness;

/// Serves the admin endpoints on `address` until the task is dropped or aborted.
pub(crate) async fn serve(address: SocketAddr, readiness: Readiness) -> std::io::Result<()> {
    let listener = crate::listener::bind(address).await?;
    tracing::info!(%address, "admin HTTP listening (/metrics, /healthz, /readyz)");
    loop {
        let (stream, _) = listener.accept().await?;
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let readiness = readiness.clone();
                async move { Ok::<_, Infallible>(respond(request.uri().path(), &readiness)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn respond(path: &str, readiness: &Readiness) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (200, "text/plain; version=0.0.4", crate::metrics::render()),
        "/healthz" => (200, "text/plain", "ok\n".to_owned()),
        "/readyz" if readiness.is_serving() => (200, "text/plain", "ready\n".to_owned()),
        "/readyz" => (503, "text/plain", "not ready\n".to_owned()),
        _ => (404, "text/plain", "not found\n".to_owned()),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
