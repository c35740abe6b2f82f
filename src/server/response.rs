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

/// The method's own name from a request path (`/bookmesh.book.v1.BookService/GetBook` →
/// `GetBook`), or `unknown` for a method no contract declares. Labels and span names come
/// from a closed set: a caller sending made-up method names must not create a metric series
/// (and memory that is never freed) per name.
pub(crate) fn rpc_method(path: &str) -> &str {
    let name = path.trim_start_matches('/');
    match name.split_once('/') {
        Some((_, method)) if crate::auth::is_known(name) => method,
        _ => UNKNOWN_METHOD,
    }
}

/// The label of every method outside the contracts.
pub(crate) const UNKNOWN_METHOD: &str = "unknown";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_methods_become_labels() {
        assert_eq!(
            rpc_method("/bookmesh.book.v1.BookService/GetBook"),
            "GetBook"
        );
        assert_eq!(rpc_method("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(rpc_method("/bookmesh.book.v1.BookService/x1"), "unknown");
        assert_eq!(rpc_method("/bookmesh.book.v1.BookService"), "unknown");
        assert_eq!(rpc_method("/made.up.Service/GetBook"), "unknown");
    }
}
