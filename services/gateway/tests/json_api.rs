//! The JSON API against real services: book, member and rental on their own databases, the
//! gateway in front, and plain HTTP/1.1 requests as curl sends them.

use std::time::Duration;

use bookmesh::testing::eventually;
use serde_json::{Value, json};

mod support;

use support::{Mesh, start as start_with};

async fn start() -> Mesh {
    start_with(|_| {}).await
}

/// An HTTP request as curl makes it: the status and the body as JSON (or a string).
async fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let (status, body) = bookmesh_mesh_tests::http_request(address, method, path, headers, body)
        .await
        .expect("http");
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, body)
}

async fn post(mesh: &Mesh, method: &str, body: Value) -> (u16, Value) {
    http(
        &mesh.gateway,
        "POST",
        &format!("/{method}"),
        &[("content-type", "application/json")],
        &body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_public_rpc_answers_json_and_a_rental_runs_its_saga() {
    let mesh = start().await;
    let (status, book) = post(
        &mesh,
        "bookmesh.book.v1.BookService/RegisterBook",
        json!({
            "title": "Dune", "author": "Frank Herbert", "isbn": "9780441013593",
            "publisher": "Ace", "published_on": "1965-08-01",
            "classification": "Fiction", "location": "Shelf 1"
        }),
    )
    .await;
    assert_eq!(status, 200, "{book}");
    let book_id = book["book"]["book_id"]
        .as_str()
        .expect("book_id")
        .to_owned();
    assert_eq!(book["book"]["status"], "BOOK_STATUS_AVAILABLE");

    let (status, member) = post(
        &mesh,
        "bookmesh.member.v1.MemberService/RegisterMember",
        json!({"name": "Ada", "email": format!("ada-{}@example.org", uuid::Uuid::now_v7().simple())}),
    )
    .await;
    assert_eq!(status, 200, "{member}");
    let member_id = member["member"]["member_id"]
        .as_str()
        .expect("member_id")
        .to_owned();
    // int64 is a string in the proto3 JSON mapping; defaults are written out.
    assert_eq!(member["member"]["points"], "0", "defaults are shown");

    let (status, rented) = post(
        &mesh,
        "bookmesh.rental.v1.RentalService/RentBook",
        json!({"member_id": member_id, "book_id": book_id}),
    )
    .await;
    assert_eq!(status, 200, "{rented}");
    assert_eq!(
        rented["rental_card"]["rented_items"][0]["state"],
        "ITEM_STATE_PENDING"
    );
    // The saga runs behind the gateway as behind any client: the card reaches RENTED.
    eventually("the rental confirmed", Duration::from_secs(20), || async {
        let (_, card) = post(
            &mesh,
            "bookmesh.rental.v1.RentalService/GetRentalCard",
            json!({"member_id": member_id}),
        )
        .await;
        (card["rental_card"]["rented_items"][0]["state"] == "ITEM_STATE_RENTED").then_some(())
    })
    .await;
    let (status, books) = post(&mesh, "bookmesh.book.v1.BookService/ListBooks", json!({})).await;
    assert_eq!(status, 200, "{books}");
    assert_eq!(books["books"][0]["status"], "BOOK_STATUS_UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_their_grpc_code_and_details() {
    let mesh = start().await;
    // A bad field: 400, invalid_argument, and the field violation readable in `debug`.
    let (status, error) = post(
        &mesh,
        "bookmesh.rental.v1.RentalService/GetRentalCard",
        json!({"member_id": "not-a-uuid"}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], "invalid_argument");
    assert_eq!(error["details"][0]["type"], "google.rpc.BadRequest");
    assert_eq!(
        error["details"][0]["debug"]["field_violations"][0]["field"],
        "member_id"
    );
    assert!(
        error["details"][0]["value"].is_string(),
        "the encoded detail, for Connect clients"
    );
    // Not found: 404.
    let (status, error) = post(
        &mesh,
        "bookmesh.rental.v1.RentalService/GetRentalCard",
        json!({"member_id": uuid::Uuid::now_v7().to_string()}),
    )
    .await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
    // JSON that is not the request message: 400 before any service is called.
    let (status, error) = post(
        &mesh,
        "bookmesh.rental.v1.RentalService/GetRentalCard",
        json!({"member_id": 42}),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    // A method that is not public, or not there at all: 501.
    for path in [
        "/bookmesh.events.v1.DeadLetterService/ListDeadLetters",
        "/bookmesh.book.v1.BookService/DeleteEverything",
        "/",
    ] {
        let (status, error) = http(
            &mesh.gateway,
            "POST",
            path,
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (501, Some("unimplemented")),
            "{path}"
        );
    }
    // Not JSON: 415, as the Connect protocol answers a codec the server does not speak.
    let (status, _) = http(
        &mesh.gateway,
        "POST",
        "/bookmesh.book.v1.BookService/ListBooks",
        &[("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(status, 415);
    // ...but a path that is no method says so, whatever the content type or HTTP method.
    for (method, path, content_type) in [
        (
            "POST",
            "/bookmesh.book.v1.BookService/DeleteEverything",
            "text/plain",
        ),
        ("PUT", "/nothing/here", "application/xml"),
    ] {
        let (status, error) = http(
            &mesh.gateway,
            method,
            path,
            &[("content-type", content_type)],
            "{}",
        )
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (501, Some("unimplemented")),
            "{method} {path}: {error}"
        );
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|message| message.starts_with(&format!("no method at {path}"))),
            "{error}"
        );
    }
    // Media types are case-insensitive; a compressed body is refused, not misread.
    let (status, _) = http(
        &mesh.gateway,
        "POST",
        "/bookmesh.book.v1.BookService/ListBooks",
        &[("content-type", "Application/JSON; charset=utf-8")],
        "{}",
    )
    .await;
    assert_eq!(status, 200);
    let (status, error) = http(
        &mesh.gateway,
        "POST",
        "/bookmesh.book.v1.BookService/ListBooks",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        "{}",
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (501, Some("unimplemented"))
    );
    // A method is called with POST.
    let (status, _) = http(
        &mesh.gateway,
        "GET",
        "/bookmesh.book.v1.BookService/ListBooks",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 405);
    // A token too large to be one: refused here, before it could upset the services.
    let huge = format!("Bearer {}", "A".repeat(9000));
    let (status, error) = http(
        &mesh.gateway,
        "POST",
        "/bookmesh.book.v1.BookService/ListBooks",
        &[
            ("content-type", "application/json"),
            ("authorization", &huge),
        ],
        "{}",
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    // A body over the limit: refused without reading it all.
    let (status, error) = post(
        &mesh,
        "bookmesh.book.v1.BookService/ListBooks",
        // Just over the limit: the client finishes sending before the gateway answers.
        json!({"page_token": "x".repeat(1024 * 1024 + 1024)}),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (429, Some("resource_exhausted"))
    );
}

/// A gRPC-Web call as a browser's client library makes it: the answer's headers (lower-case
/// names) and body.
async fn grpc_web(
    address: &str,
    path: &str,
    message: &impl prost::Message,
) -> (std::collections::HashMap<String, String>, Vec<u8>) {
    let encoded = message.encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(encoded.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&encoded);
    grpc_web_raw(address, path, &body).await
}

/// A gRPC-Web request with `body` as it is (frames included).
async fn grpc_web_raw(
    address: &str,
    path: &str,
    body: &[u8],
) -> (std::collections::HashMap<String, String>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: {address}\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    stream.write_all(body).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let headers = String::from_utf8_lossy(&response[..split])
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (headers, response[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_answers_in_frames_and_errors_in_headers() {
    use bookmesh::proto::book::v1::{ListBooksRequest, ListBooksResponse};
    use bookmesh::proto::rental::v1::GetRentalCardRequest;
    use prost::Message as _;
    let mesh = start().await;
    post(
        &mesh,
        "bookmesh.book.v1.BookService/RegisterBook",
        json!({
            "title": "Snow Crash", "author": "Neal Stephenson", "isbn": "9780441013593",
            "publisher": "Bantam", "published_on": "1992-06-01",
            "classification": "Fiction", "location": "Shelf 3"
        }),
    )
    .await;
    let (headers, body) = grpc_web(
        &mesh.gateway,
        "/bookmesh.book.v1.BookService/ListBooks",
        &ListBooksRequest::default(),
    )
    .await;
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/grpc-web+proto")
    );
    // One message frame, then the trailer frame with grpc-status 0.
    assert_eq!(body[0], 0, "a message frame first");
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let books = ListBooksResponse::decode(&body[5..5 + length]).expect("the response message");
    assert_eq!(books.books[0].title, "Snow Crash");
    assert_eq!(body[5 + length], 0x80, "then the trailers");
    assert!(String::from_utf8_lossy(&body[5 + length..]).contains("grpc-status:0"));

    // An error: no body, the status in the headers, details included for the browser.
    let (headers, body) = grpc_web(
        &mesh.gateway,
        "/bookmesh.rental.v1.RentalService/GetRentalCard",
        &GetRentalCardRequest {
            member_id: "not-a-uuid".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(body.is_empty(), "trailers-only");
    assert_eq!(headers.get("grpc-status").map(String::as_str), Some("3"));
    assert!(
        headers.contains_key("grpc-status-details-bin"),
        "{headers:?}"
    );

    // A frame whose message is not the request: refused by the gateway, not sent on (a
    // service would answer INTERNAL, which its callers' breakers count).
    let (headers, _) = grpc_web_raw(
        &mesh.gateway,
        "/bookmesh.book.v1.BookService/ListBooks",
        &[0, 0, 0, 0, 1, 0xff],
    )
    .await;
    assert_eq!(
        headers.get("grpc-status").map(String::as_str),
        Some("3"),
        "{headers:?}"
    );
}
