//! Which URL paths the gateway serves: every unary and server-streaming method of the public
//! services, read once
//! from the contracts' descriptors (`proto/`), each with the upstream that serves it.

use std::collections::HashMap;
use std::sync::Arc;

use bookmesh::client::{Idempotency, Upstream};
use prost_reflect::{DescriptorPool, MethodDescriptor};

/// The services the gateway exposes, and the upstream (the workload) that serves each. The
/// event feed and dead letters stay inside the mesh.
pub const PUBLIC_SERVICES: [(&str, &str); 5] = [
    ("bookmesh.book.v1.BookService", "book"),
    ("bookmesh.member.v1.MemberService", "member"),
    ("bookmesh.rental.v1.RentalService", "rental"),
    ("bookmesh.bestbook.v1.BestBookService", "bestbook"),
    (
        "bookmesh.notification.v1.NotificationService",
        "notification",
    ),
];

/// One method the gateway serves.
#[derive(Clone)]
pub struct Route {
    pub method: MethodDescriptor,
    /// `/package.Service/Method`, the gRPC path upstream.
    pub path: http::uri::PathAndQuery,
    /// The method's name, for the client stack's metrics (a closed set: the contracts').
    pub label: &'static str,
    /// `package.Service/Method`, the name of the gateway's span of a call.
    pub span_name: &'static str,
    pub idempotency: Idempotency,
    pub upstream: Arc<Upstream>,
}

/// The routes by path.
pub struct Routes {
    by_path: HashMap<String, Route>,
    /// The contracts and `google.rpc` error details, for JSON.
    pub pool: DescriptorPool,
}

impl Routes {
    /// Every unary method of [`PUBLIC_SERVICES`], calling `upstream_of(workload)`.
    pub fn new(
        mut upstream_of: impl FnMut(&str) -> Result<Arc<Upstream>, String>,
    ) -> Result<Self, String> {
        let mut pool = DescriptorPool::decode(bookmesh::proto::FILE_DESCRIPTOR_SET)
            .map_err(|error| format!("contract descriptors: {error}"))?;
        pool.decode_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .map_err(|error| format!("error detail descriptors: {error}"))?;
        let mut by_path = HashMap::new();
        for (service_name, workload) in PUBLIC_SERVICES {
            let service = pool
                .get_service_by_name(service_name)
                .ok_or_else(|| format!("{service_name} is not in the contracts"))?;
            let upstream = upstream_of(workload)?;
            for method in service.methods() {
                // Browsers cannot stream a request (gRPC-Web has no client streaming).
                if method.is_client_streaming() {
                    continue;
                }
                let path = format!("/{service_name}/{}", method.name());
                // Leaked once at start: one name per method of the contracts, for the process's life.
                let label: &'static str = Box::leak(method.name().to_owned().into_boxed_str());
                let span_name: &'static str =
                    Box::leak(path.trim_start_matches('/').to_owned().into_boxed_str());
                // Reads (and opening a watch) are safe to retry; a write is retried only when
                // it never left (the client stack's rule for non-idempotent calls).
                let idempotency = if ["Get", "List", "Watch"]
                    .iter()
                    .any(|prefix| method.name().starts_with(prefix))
                {
                    Idempotency::Idempotent
                } else {
                    Idempotency::NotIdempotent
                };
                let route = Route {
                    path: path
                        .parse()
                        .map_err(|error| format!("path {path}: {error}"))?,
                    method,
                    label,
                    span_name,
                    idempotency,
                    upstream: upstream.clone(),
                };
                by_path.insert(path, route);
            }
        }
        Ok(Self { by_path, pool })
    }

    /// The route of `path`, if the gateway serves it.
    pub fn get(&self, path: &str) -> Option<&Route> {
        self.by_path.get(path)
    }

    /// Every path served, sorted.
    pub fn paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.by_path.keys().map(String::as_str).collect();
        paths.sort_unstable();
        paths
    }
}
