//! The browser side: gRPC-Web
//! (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md). A request body is one
//! length-prefixed message (base64 for `application/grpc-web-text`); the answer is the
//! response message (a server stream's messages, one frame each as they come) and a trailer
//! frame with the status, or, for an error before any message, no body and the status in the
//! headers (`grpc-status`, `grpc-message`, `grpc-status-details-bin`: the details browsers
//! decode, `google.rpc.BadRequest` included).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tonic::Status;

/// Which gRPC-Web a content type asks for, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/grpc-web`, `application/grpc-web+proto`.
    Binary,
    /// `application/grpc-web-text`, `application/grpc-web-text+proto` (base64).
    Text,
}

impl Encoding {
    /// The encoding `content_type` names, if it is gRPC-Web with protobuf messages.
    pub fn of(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().map(str::trim) {
            Some("application/grpc-web" | "application/grpc-web+proto") => Some(Self::Binary),
            Some("application/grpc-web-text" | "application/grpc-web-text+proto") => {
                Some(Self::Text)
            }
            _ => None,
        }
    }

    /// The content type of the answer.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Binary => "application/grpc-web+proto",
            Self::Text => "application/grpc-web-text+proto",
        }
    }
}

const DATA: u8 = 0x00;
const TRAILERS: u8 = 0x80;
const COMPRESSED: u8 = 0x01;

/// The one message of a unary request body.
pub fn decode_request(body: &[u8], encoding: Encoding) -> Result<Vec<u8>, Status> {
    let decoded;
    let body = match encoding {
        Encoding::Binary => body,
        Encoding::Text => {
            let text: Vec<u8> = body
                .iter()
                .copied()
                .filter(|byte| !byte.is_ascii_whitespace())
                .collect();
            decoded = STANDARD
                .decode(text)
                .map_err(|_| Status::invalid_argument("grpc-web-text body is not base64"))?;
            decoded.as_slice()
        }
    };
    let Some((&flags, rest)) = body.split_first() else {
        return Err(Status::invalid_argument(
            "empty gRPC-Web body: one message expected",
        ));
    };
    if flags & COMPRESSED != 0 {
        return Err(Status::unimplemented(
            "compressed messages are not accepted",
        ));
    }
    if flags != DATA || rest.len() < 4 {
        return Err(Status::invalid_argument("malformed gRPC-Web frame"));
    }
    let (length, message) = rest.split_at(4);
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    if message.len() != length {
        return Err(Status::invalid_argument(
            "a unary gRPC-Web body is exactly one message",
        ));
    }
    Ok(message.to_vec())
}

/// The answer body: the message frame, then the trailer frame with `grpc-status: 0`.
pub fn encode_response(message: &[u8], encoding: Encoding) -> Vec<u8> {
    let mut body = Vec::with_capacity(message.len() + 32);
    frame(&mut body, DATA, message);
    frame(&mut body, TRAILERS, b"grpc-status:0\r\ngrpc-message:\r\n");
    encoded(body, encoding)
}

/// One message of a stream, as a frame (base64 on its own in text mode: a text stream is a
/// series of base64 chunks, each decodable as it arrives).
pub fn message_frame(message: &[u8], encoding: Encoding) -> Vec<u8> {
    let mut body = Vec::with_capacity(message.len() + 5);
    frame(&mut body, DATA, message);
    encoded(body, encoding)
}

/// The trailer frame that ends a stream with `status` (its details included).
pub fn trailer_frame(status: &Status, encoding: Encoding) -> Vec<u8> {
    let mut trailers = Vec::new();
    for (name, value) in &error_headers(status) {
        trailers.extend_from_slice(name.as_str().as_bytes());
        trailers.push(b':');
        trailers.extend_from_slice(value.as_bytes());
        trailers.extend_from_slice(b"\r\n");
    }
    let mut body = Vec::with_capacity(trailers.len() + 5);
    frame(&mut body, TRAILERS, &trailers);
    encoded(body, encoding)
}

fn encoded(body: Vec<u8>, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Binary => body,
        Encoding::Text => STANDARD.encode(body).into_bytes(),
    }
}

fn frame(out: &mut Vec<u8>, flags: u8, payload: &[u8]) {
    out.push(flags);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
}

/// The headers of an error answer ("trailers-only"): the status as gRPC writes it.
pub fn error_headers(status: &Status) -> http::HeaderMap {
    // tonic writes the status headers (message percent-encoded, details in base64) for a
    // trailers-only gRPC answer; gRPC-Web's are the same, with its own content type.
    // Only the status headers: an upstream status carries the upstream's response headers
    // as metadata, which are not the browser's business.
    let (parts, ()) = status.clone().into_http::<()>().into_parts();
    ["grpc-status", "grpc-message", "grpc-status-details-bin"]
        .into_iter()
        .filter_map(|name| {
            parts
                .headers
                .get(name)
                .map(|value| (http::HeaderName::from_static(name), value.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(message: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        frame(&mut body, DATA, message);
        body
    }

    #[test]
    fn one_message_in_and_a_message_and_trailers_out() {
        assert_eq!(
            decode_request(&request(b"abc"), Encoding::Binary).ok(),
            Some(b"abc".to_vec())
        );
        let text = STANDARD.encode(request(b"abc"));
        assert_eq!(
            decode_request(text.as_bytes(), Encoding::Text).ok(),
            Some(b"abc".to_vec())
        );
        for bad in [vec![], vec![0, 0, 0], vec![1, 0, 0, 0, 0], {
            let mut two = request(b"a");
            two.extend(request(b"b"));
            two
        }] {
            assert!(decode_request(&bad, Encoding::Binary).is_err(), "{bad:?}");
        }
        let answer = encode_response(b"xy", Encoding::Binary);
        assert_eq!(&answer[..7], &[0, 0, 0, 0, 2, b'x', b'y']);
        assert_eq!(answer[7], TRAILERS);
        assert!(String::from_utf8_lossy(&answer).contains("grpc-status:0"));
        assert_eq!(
            Encoding::of("application/grpc-web-text+proto"),
            Some(Encoding::Text)
        );
        assert_eq!(Encoding::of("application/json"), None);
    }

    #[test]
    fn a_stream_ends_with_a_trailer_frame_carrying_its_status() {
        let ok = trailer_frame(&Status::ok(""), Encoding::Binary);
        assert_eq!(ok[0], TRAILERS);
        assert!(String::from_utf8_lossy(&ok).contains("grpc-status:0"));
        let failed = trailer_frame(&Status::unavailable("gone away"), Encoding::Binary);
        let text = String::from_utf8_lossy(&failed[5..]).into_owned();
        assert!(text.contains("grpc-status:14\r\n"), "{text}");
        assert!(text.contains("grpc-message:gone%20away\r\n"), "{text}");
        let length = u32::from_be_bytes([failed[1], failed[2], failed[3], failed[4]]) as usize;
        assert_eq!(length, failed.len() - 5);
        let message = message_frame(b"m", Encoding::Text);
        assert_eq!(
            STANDARD.decode(message).ok(),
            Some(vec![0, 0, 0, 0, 1, b'm'])
        );
    }
}
