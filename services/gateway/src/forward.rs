//! Forwarding an encoded request to its upstream through the shared client stack (discovery,
//! balancing, deadline, retries, breaker, tracing): the gateway never decodes into Rust types,
//! it passes the protobuf bytes on.

use bookmesh::client::Upstream;
use prost::bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

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
            move |channel, mut request: Request<Bytes>| {
                let path = path.clone();
                if let Some(token) = &authorization {
                    request
                        .metadata_mut()
                        .insert("authorization", token.clone());
                }
                if let Some(key) = &idempotency_key {
                    request
                        .metadata_mut()
                        .insert("idempotency-key", key.clone());
                }
                async move {
                    let mut grpc = tonic::client::Grpc::new(channel);
                    grpc.ready().await.map_err(|error| {
                        // The details (addresses, TLS) stay in the log, not in a browser.
                        tracing::debug!(%error, "upstream connection not ready");
                        Status::unavailable("the service is unavailable; try again")
                    })?;
                    grpc.unary(request, path, Passthrough).await
                }
            },
        )
        .await
}
