//! The answers every endpoint builds: one body type for whole and streamed answers.

use std::convert::Infallible;

use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use http_body_util::Full;
use http_body_util::combinators::BoxBody;
use hyper::body::Bytes;

/// A response body: a whole answer, or a gRPC-Web stream.
pub type Body = BoxBody<Bytes, Infallible>;
pub type Response = hyper::Response<Body>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// An answer with `status`, `content_type` and `body`.
pub fn with(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON answer.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    with(status, "application/json", body)
}

/// A JSON answer from a value.
pub fn json_value(status: StatusCode, value: &serde_json::Value) -> Response {
    json(status, value.to_string())
}

/// A JSON error in the Connect shape (`code`, `message`), for the non-RPC endpoints too.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_value(
        status,
        &serde_json::json!({ "code": code, "message": message }),
    )
}
