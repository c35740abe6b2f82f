//! The services' admin ports (`/metrics`, `/readyz`, `/faults`), which the console's mesh view
//! and fault switches read through the gateway: where they are, and one bounded HTTP call.
//!
//! Each target is `service=host:port`; the host is resolved at every use, so a Kubernetes
//! headless Service's name gives every ready replica.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Most replicas looked at per service.
const MAX_REPLICAS: usize = 32;
/// An admin call answers within this, or the replica counts as down.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A service's `/metrics` is tens of kilobytes.
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// The admin ports of the services, by name.
#[derive(Debug, Clone, Default)]
pub struct AdminTargets {
    targets: Vec<(String, String)>,
}

impl AdminTargets {
    /// From `service=host:port` entries.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut targets = Vec::new();
        for entry in entries.iter().filter(|entry| !entry.trim().is_empty()) {
            let Some((name, address)) = entry.split_once('=') else {
                return Err(format!(
                    "admin target {entry:?}: expected service=host:port"
                ));
            };
            let (name, address) = (name.trim(), address.trim());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                || address.rsplit_once(':').is_none()
            {
                return Err(format!(
                    "admin target {entry:?}: expected service=host:port"
                ));
            }
            targets.push((name.to_owned(), address.to_owned()));
        }
        Ok(Self { targets })
    }

    /// The services' names, in the configured order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|(name, _)| name.as_str())
    }

    /// Whether `name` is a configured service.
    pub fn has(&self, name: &str) -> bool {
        self.targets.iter().any(|(known, _)| known == name)
    }

    /// The replicas of `service` now (its host resolved), sorted; empty if it resolves to
    /// nothing.
    pub async fn replicas(&self, service: &str) -> Vec<SocketAddr> {
        let Some((_, address)) = self.targets.iter().find(|(name, _)| name == service) else {
            return Vec::new();
        };
        let resolved = tokio::time::timeout(CALL_TIMEOUT, tokio::net::lookup_host(address)).await;
        let mut replicas: Vec<SocketAddr> = match resolved {
            Ok(Ok(addresses)) => addresses.take(MAX_REPLICAS).collect(),
            _ => Vec::new(),
        };
        replicas.sort_unstable();
        replicas.dedup();
        replicas
    }
}

/// One HTTP/1.1 call to an admin port: the status and body, or why there was none.
pub async fn call(
    address: SocketAddr,
    method: Method,
    path: &str,
    authorization: Option<&http::HeaderValue>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    tokio::time::timeout(CALL_TIMEOUT, async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|error| error.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, address.to_string())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = authorization {
            request = request.header(header::AUTHORIZATION, token.clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        Ok((status, body))
    })
    .await
    .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_service_equals_host_and_port() {
        let targets = AdminTargets::parse(&[
            "book=127.0.0.1:51051".to_owned(),
            "rental=rental-admin.bookmesh.svc:9090".to_owned(),
        ])
        .expect("valid");
        assert_eq!(targets.names().collect::<Vec<_>>(), ["book", "rental"]);
        assert!(targets.has("rental") && !targets.has("member"));
        for bad in ["book", "=127.0.0.1:1", "Book=h:1", "book=nohost"] {
            assert!(AdminTargets::parse(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
