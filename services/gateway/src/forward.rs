//! Forwarding an encoded request to its upstream through the shared client stack (discovery,
//! balancing, deadline, retries, breaker, tracing): the gateway never decodes into Rust types,
//! it passes the protobuf bytes on.

use bookmesh::client::Upstream;
use prost::bytes::{Buf, BufMut, Bytes};
use std::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;

use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

use crate::routes::Route;

/// A codec that passes messages through as bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Passthrough;

impl Codec for Passthrough {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Passthrough;
    type Decoder = Passthrough;

    fn encoder(&mut self) -> Self::Encoder {
        Passthrough
    }

    fn decoder(&mut self) -> Self::Decoder {
        Passthrough
    }
}

impl Encoder for Passthrough {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Passthrough {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Opens the server stream of `route` upstream with the encoded `message` through the client
/// stack (replica, retries of the opening, breaker, trace); it lasts until `ends_at`, which
/// goes upstream as `grpc-timeout`.
pub async fn open_stream(
    route: &Route,
    message: Bytes,
    ends_at: Instant,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
) -> Result<Streaming<Bytes>, Status> {
    let path = route.path.clone();
    route
        .upstream
        .open_stream(
            route.label,
            message,
            ends_at,
            move |channel, request: Request<Bytes>| {
                let path = path.clone();
                let request = with_caller(request, &authorization, &None);
                async move {
                    let mut grpc = ready(channel).await?;
                    grpc.server_streaming(request, path, Passthrough).await
                }
            },
        )
        .await
}

/// The request with the caller's token and idempotency key.
fn with_caller(
    mut request: Request<Bytes>,
    authorization: &Option<MetadataValue<tonic::metadata::Ascii>>,
    idempotency_key: &Option<MetadataValue<tonic::metadata::Ascii>>,
) -> Request<Bytes> {
    if let Some(token) = authorization {
        request
            .metadata_mut()
            .insert("authorization", token.clone());
    }
    if let Some(key) = idempotency_key {
        request
            .metadata_mut()
            .insert("idempotency-key", key.clone());
    }
    request
}

async fn ready(channel: Channel) -> Result<tonic::client::Grpc<Channel>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|error| {
        // The details (addresses, TLS) stay in the log, not in a browser.
        tracing::debug!(%error, "upstream connection not ready");
        Status::unavailable("the service is unavailable; try again")
    })?;
    Ok(grpc)
}

/// Calls `route` upstream with the encoded `message`, on behalf of whoever sent
/// `authorization` (their token goes along; the services decide what they may do), with
/// their `idempotency-key` if they named the write.
pub async fn call(
    route: &Route,
    message: Bytes,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    idempotency_key: Option<MetadataValue<tonic::metadata::Ascii>>,
) -> Result<Bytes, Status> {
    let upstream: &Upstream = &route.upstream;
    let path = route.path.clone();
    upstream
        .call_method(
            route.label,
            route.idempotency,
            message,
            move |channel, request: Request<Bytes>| {
                let path = path.clone();
                let request = with_caller(request, &authorization, &idempotency_key);
                async move {
                    let mut grpc = ready(channel).await?;
                    grpc.unary(request, path, Passthrough).await
                }
            },
        )
        .await
}
