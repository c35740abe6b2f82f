//! The JSON side: the Connect protocol's unary form (https://connectrpc.com/docs/protocol):
//! `POST /<package.Service>/<Method>` with a JSON body (the proto3 JSON mapping), answered
//! with the response message as JSON, or an error as
//! `{"code": "invalid_argument", "message": "…", "details": [{"type", "value", "debug"}]}`
//! and the HTTP status the protocol gives that code. Chosen over transcoding with
//! `google.api.http` annotations because it needs nothing added to the contracts, serves every
//! method at a predictable URL, and is what Connect's TypeScript clients speak.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::StatusCode;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::{Code, Status};

/// The request message, from its JSON; INVALID_ARGUMENT says where the JSON is wrong.
pub fn decode_request(descriptor: MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, Status> {
    let json = if json.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        json
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize(descriptor, &mut deserializer)
        .and_then(|message| deserializer.end().map(|()| message))
        .map_err(|error| Status::invalid_argument(format!("request body: {error}")))?;
    Ok(message.encode_to_vec())
}

/// How the JSON is written: the contracts' own field names (`member_id`, as in `proto/` and
/// in requests), and every field, defaults included (a balance of 0 points is shown).
fn json_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
}

/// The answer message as JSON.
pub fn encode_response(descriptor: MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, Status> {
    let message = DynamicMessage::decode(descriptor, bytes)
        .map_err(|error| Status::internal(format!("undecodable answer from upstream: {error}")))?;
    to_json(&message)
}

fn to_json(message: &DynamicMessage) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &json_options())
        .map_err(|error| Status::internal(format!("answer as JSON: {error}")))?;
    Ok(out)
}

/// The Connect code name of `code`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status the Connect protocol gives `code`.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error body of `status`: its code, message and details. Each detail keeps its type and
/// encoded value (what Connect clients decode) and, for the `google.rpc` types, a readable
/// `debug` form (what people read with curl): field violations, precondition types, reasons.
pub fn error_body(status: &Status, pool: &DescriptorPool) -> Vec<u8> {
    let details: Vec<serde_json::Value> = tonic_types::pb::Status::decode(status.details())
        .map(|rpc_status| rpc_status.details)
        .unwrap_or_default()
        .into_iter()
        .map(|any| {
            let type_name = any
                .type_url
                .rsplit('/')
                .next()
                .unwrap_or(&any.type_url)
                .to_owned();
            let debug = pool
                .get_message_by_name(&type_name)
                .and_then(|descriptor| {
                    DynamicMessage::decode(descriptor, any.value.as_slice()).ok()
                })
                .and_then(|message| to_json(&message).ok())
                .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok());
            let mut detail = serde_json::json!({
                "type": type_name,
                "value": STANDARD_NO_PAD.encode(&any.value),
            });
            if let Some(debug) = debug {
                detail["debug"] = debug;
            }
            detail
        })
        .collect();
    let mut body = serde_json::json!({
        "code": code_name(status.code()),
        "message": status.message(),
    });
    if !details.is_empty() {
        body["details"] = serde_json::Value::Array(details);
    }
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> DescriptorPool {
        let mut pool = DescriptorPool::decode(bookmesh::proto::FILE_DESCRIPTOR_SET).expect("pool");
        pool.decode_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .expect("rpc");
        pool
    }

    #[test]
    fn json_requests_become_protobuf_and_bad_json_is_invalid_argument() {
        let pool = pool();
        let request = pool
            .get_message_by_name("bookmesh.rental.v1.GetRentalCardRequest")
            .expect("type");
        let bytes = decode_request(request.clone(), br#"{"member_id": "m-1", "pageSize": 5}"#)
            .expect("decodes, snake or camel case");
        let decoded = bookmesh::proto::rental::v1::GetRentalCardRequest::decode(bytes.as_slice())
            .expect("protobuf");
        assert_eq!((decoded.member_id.as_str(), decoded.page_size), ("m-1", 5));
        for bad in [
            &br#"{"member_id": 5}"#[..],
            b"{",
            br#"{"nope": 1}"#,
            b"{} {}",
        ] {
            let refused = decode_request(request.clone(), bad).expect_err("bad json");
            assert_eq!(refused.code(), Code::InvalidArgument);
        }
        assert!(
            decode_request(request, b"").is_ok(),
            "an empty body is the empty message"
        );
    }

    #[test]
    fn errors_keep_their_code_and_readable_details() {
        use tonic_types::{ErrorDetails, StatusExt as _};
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "bad request",
            ErrorDetails::with_bad_request_violation("member_id", "must be a UUID"),
        );
        let body: serde_json::Value =
            serde_json::from_slice(&error_body(&status, &pool())).expect("json");
        assert_eq!(body["code"], "invalid_argument");
        assert_eq!(body["details"][0]["type"], "google.rpc.BadRequest");
        assert_eq!(
            body["details"][0]["debug"]["field_violations"][0]["field"],
            "member_id"
        );
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
