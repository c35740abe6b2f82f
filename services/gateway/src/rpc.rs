//! Calls of the contracts' methods: `POST /<package.Service>/<Method>` as JSON (Connect's
//! unary form) or gRPC-Web (unary, and server streaming for the live views), forwarded through
//! the shared client stack with the caller's token, idempotency key and deadline.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::reply::{self, Response};
use crate::{Gateway, PUBLIC_SERVICES, connect, forward, grpc_web, routes};

/// Longest `authorization` header forwarded: the services refuse tokens over 8 KiB, and a
/// header over their header-list limit would be refused as a transport error.
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;
/// Longest `idempotency-key` forwarded (the services' own bound).
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;
/// How long after its deadline the gateway itself ends a stream: the service ends it first,
/// with its own status, unless it stopped answering.
const STREAM_GRACE: Duration = Duration::from_secs(1);

/// A call read and checked, ready to forward.
struct Prepared<'a> {
    route: &'a routes::Route,
    message: Vec<u8>,
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
    idempotency_key: Option<tonic::metadata::AsciiMetadataValue>,
    deadline: Instant,
}

impl Gateway {
    /// Answers a call of a method, as JSON or as gRPC-Web after the request's content type.
    pub(crate) async fn rpc(&self, request: hyper::Request<Incoming>) -> Response {
        // Media types are case-insensitive (RFC 9110).
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if let Some(encoding) = grpc_web::Encoding::of(&content_type) {
            return self.grpc_web(request, encoding).await;
        }
        // A path that is no method says so whatever its content type: "wrong content type"
        // would send the caller looking in the wrong place.
        if self.routes.get(request.uri().path()).is_none() {
            let status = no_method(request.uri().path());
            return reply::json(
                connect::http_status(status.code()),
                connect::error_body(&status, &self.routes.pool),
            );
        }
        if request.method() != Method::POST {
            let mut response = reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "unimplemented",
                "methods are called with POST",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
            return response;
        }
        let json = content_type.split(';').next().map(str::trim) == Some("application/json");
        if !json {
            // The Connect protocol's answer to a codec the server does not speak.
            let mut response = reply::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unimplemented",
                "content-type must be application/json, or application/grpc-web(+proto) or \
                 application/grpc-web-text(+proto)",
            );
            response.headers_mut().insert(
                http::HeaderName::from_static("accept-post"),
                http::HeaderValue::from_static(
                    "application/json, application/grpc-web+proto, application/grpc-web-text+proto",
                ),
            );
            return response;
        }
        let answer = if compressed(&request, header::CONTENT_ENCODING.as_str()) {
            Err(Status::unimplemented(
                "compressed requests are not accepted (content-encoding: identity only)",
            ))
        } else {
            self.unary_json(request).await
        };
        match answer {
            Ok(json) => reply::json(StatusCode::OK, json),
            Err(status) => reply::json(
                connect::http_status(status.code()),
                connect::error_body(&status, &self.routes.pool),
            ),
        }
    }

    async fn unary_json(&self, request: hyper::Request<Incoming>) -> Result<Vec<u8>, Status> {
        let call = self
            .prepare(request, |route, body| {
                if route.method.is_server_streaming() {
                    return Err(Status::unimplemented(
                        "a streaming method: call it with gRPC-Web (application/grpc-web+proto); \
                         JSON serves the unary methods",
                    ));
                }
                connect::decode_request(route.method.input(), body)
            })
            .await?;
        let route = call.route;
        let answer = bookmesh::deadline::scope(
            call.deadline,
            forward::call(
                route,
                call.message.into(),
                call.authorization,
                call.idempotency_key,
            ),
        )
        .await?;
        connect::encode_response(route.method.output(), &answer)
    }

    async fn grpc_web(
        &self,
        request: hyper::Request<Incoming>,
        encoding: grpc_web::Encoding,
    ) -> Response {
        if compressed(&request, "grpc-encoding") {
            return grpc_web_error(
                &Status::unimplemented("compressed messages are not accepted"),
                encoding,
            );
        }
        let prepared = self
            .prepare(request, |route, body| {
                let message = grpc_web::decode_request(body, encoding)?;
                // Checked here like JSON: a service answers a message it cannot decode with
                // INTERNAL, which its callers' breakers would count.
                prost_reflect::DynamicMessage::decode(route.method.input(), message.as_slice())
                    .map_err(|_| {
                        Status::invalid_argument("the message is not the method's request")
                    })?;
                Ok(message)
            })
            .await;
        let call = match prepared {
            Ok(call) => call,
            Err(status) => return grpc_web_error(&status, encoding),
        };
        let (route, deadline) = (call.route, call.deadline);
        if route.method.is_server_streaming() {
            // In the deadline's scope too: a stream asked to end soon must also open by then.
            let opened = bookmesh::deadline::scope(
                deadline,
                forward::open_stream(route, call.message.into(), deadline, call.authorization),
            )
            .await;
            return match opened {
                Ok(upstream) => {
                    stream_response(upstream, encoding, deadline, self.stopping.clone())
                }
                Err(status) => grpc_web_error(&status, encoding),
            };
        }
        let answer = bookmesh::deadline::scope(
            deadline,
            forward::call(
                route,
                call.message.into(),
                call.authorization,
                call.idempotency_key,
            ),
        )
        .await;
        match answer {
            Ok(answer) => reply::with(
                StatusCode::OK,
                encoding.content_type(),
                grpc_web::encode_response(&answer, encoding),
            ),
            Err(status) => grpc_web_error(&status, encoding),
        }
    }

    /// Reads the call at the request's path: its route, the request message `decode` makes
    /// of the body (JSON against the method's input type, or gRPC-Web's message checked
    /// against it), the caller's token and idempotency key, and its deadline.
    async fn prepare(
        &self,
        request: hyper::Request<Incoming>,
        decode: impl FnOnce(&routes::Route, &[u8]) -> Result<Vec<u8>, Status>,
    ) -> Result<Prepared<'_>, Status> {
        let Some(route) = self.routes.get(request.uri().path()) else {
            return Err(no_method(request.uri().path()));
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
        // A stream lives up to --stream-timeout; a call answers within --request-timeout.
        let limit = if route.method.is_server_streaming() {
            self.stream_timeout
        } else {
            self.request_timeout
        };
        let timeout = asked.map_or(limit, |asked| asked.min(limit));
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
        // The body counts against the call's budget (at most --request-timeout, a stream's
        // too): a client that sends it slowly holds a connection no longer than that.
        let body = match tokio::time::timeout(
            timeout.min(self.request_timeout),
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
        let message = decode(route, &body)?;
        Ok(Prepared {
            route,
            message,
            authorization,
            idempotency_key,
            deadline: started + timeout,
        })
    }
}

/// A gRPC-Web error: no body, the status in the headers ("trailers-only").
fn grpc_web_error(status: &Status, encoding: grpc_web::Encoding) -> Response {
    let mut response = reply::with(StatusCode::OK, encoding.content_type(), Bytes::new());
    response
        .headers_mut()
        .extend(grpc_web::error_headers(status));
    response
}

/// The answer of a server-streaming call: each upstream message as a gRPC-Web frame as it
/// arrives, then the trailer frame with the stream's final status.
fn stream_response(
    upstream: tonic::Streaming<Bytes>,
    encoding: grpc_web::Encoding,
    deadline: Instant,
    stopping: watch::Receiver<bool>,
) -> Response {
    // One frame in flight: a slow browser slows the upstream stream (HTTP/2 flow control),
    // not the gateway's memory.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    tokio::spawn(pump(upstream, tx, encoding, deadline, stopping));
    let mut response = hyper::Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(encoding.content_type()),
    );
    response
}

async fn pump(
    mut upstream: tonic::Streaming<Bytes>,
    tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    encoding: grpc_web::Encoding,
    deadline: Instant,
    mut stopping: watch::Receiver<bool>,
) {
    let ends_at = tokio::time::Instant::from_std(deadline + STREAM_GRACE);
    let status = loop {
        if *stopping.borrow() {
            break Status::unavailable("the gateway is stopping; call again");
        }
        tokio::select! {
            message = upstream.message() => match message {
                Ok(Some(message)) => {
                    let frame = grpc_web::message_frame(&message, encoding);
                    if !send(&tx, frame, ends_at, &mut stopping).await {
                        // The browser went away, stopped reading until the deadline, or the
                        // gateway stops: dropping `upstream` cancels the call and gives its
                        // share of the upstream connection's window back.
                        return;
                    }
                }
                Ok(None) => break Status::ok(""),
                Err(status) => break status,
            },
            () = tokio::time::sleep_until(ends_at) => {
                break Status::deadline_exceeded("the stream's deadline passed");
            }
            changed = stopping.changed() => if changed.is_err() {
                break Status::unavailable("the gateway is stopping; call again");
            },
            () = tx.closed() => return,
        }
    };
    // The trailers get a moment of their own: a stream ending at its deadline still says how.
    let trailers = grpc_web::trailer_frame(&status, encoding);
    let _ = tokio::time::timeout(
        STREAM_GRACE,
        tx.send(Ok(Frame::data(Bytes::from(trailers)))),
    )
    .await;
}

/// Sends `frame` to the browser, unless the stream's end (`ends_at`) or the gateway's stop
/// comes first: a browser that keeps its connection open without reading must not hold the
/// stream (and the upstream's flow-control window) past its deadline. Whether it was sent.
async fn send(
    tx: &mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    frame: Vec<u8>,
    ends_at: tokio::time::Instant,
    stopping: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        permit = tx.reserve() => match permit {
            Ok(permit) => {
                permit.send(Ok(Frame::data(Bytes::from(frame))));
                true
            }
            Err(_) => false,
        },
        () = tokio::time::sleep_until(ends_at) => false,
        () = async {
            // The guard `wait_for` returns must not live across an await.
            let _ = stopping.wait_for(|stop| *stop).await;
        } => false,
    }
}

/// Whether the request's `header` names a compression other than `identity`: the gateway
/// would otherwise read compressed bytes as a message.
fn compressed(request: &hyper::Request<Incoming>, header: &str) -> bool {
    request
        .headers()
        .get(header)
        .is_some_and(|value| !value.as_bytes().eq_ignore_ascii_case(b"identity"))
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

/// The answer for a path that is not a public method.
fn no_method(path: &str) -> Status {
    Status::unimplemented(format!(
        "no method at {path}: POST /<package.Service>/<Method>, for the services {}",
        PUBLIC_SERVICES.map(|(name, _)| name).join(", ")
    ))
}
