//! What the observing layers read off a response.

use tonic::body::Body;

/// The response's gRPC status code as sent in its headers: a trailers-only answer (every
/// error, and a unary call's) carries it there; a streaming answer that started sends it in
/// its trailers, and counts as OK ("0") here.
pub(crate) fn grpc_status(response: &http::Response<Body>) -> &str {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("0")
}

/// The method's own name from a request path: `/bookmesh.book.v1.BookService/GetBook` →
/// `GetBook`.
pub(crate) fn rpc_method(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or_default()
}
