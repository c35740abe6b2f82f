//! What the console needs from the gateway, against real services: a live view over
//! gRPC-Web server streaming, the development sign-in, the mesh view and fault switches read
//! from the services' admin ports, and the console's own files. Its own test binary: faults
//! are process-wide, and this process runs the services.

use std::time::Duration;

use bookmesh::proto::rental::v1::{
    ItemState, WatchRentalHistoryRequest, WatchRentalHistoryResponse,
};
use bookmesh::testing::eventually;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use prost::Message as _;
use serde_json::{Value, json};

mod support;

use support::{Mesh, start};

/// One HTTP/1.1 request on its own connection; the response, its body still to be read.
async fn send(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> hyper::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder().method(method).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", address);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender
        .send_request(request.body(Full::new(Bytes::from(body))).expect("request"))
        .await
        .expect("response")
}

/// A whole answer: status, headers and body as JSON (or a string).
async fn call(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, Value) {
    let response = send(address, method, path, headers, body.as_bytes().to_vec()).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (parts.status.as_u16(), parts.headers, value)
}

async fn post_json(mesh: &Mesh, method: &str, body: Value) -> Value {
    let (status, _, answer) = call(
        &mesh.gateway,
        "POST",
        &format!("/{method}"),
        &[("content-type", "application/json")],
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{method}: {answer}");
    answer
}

/// A gRPC-Web stream as a browser reads it: frames as they arrive.
struct GrpcWebStream {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

enum WebFrame {
    Message(Vec<u8>),
    Trailers(String),
}

impl GrpcWebStream {
    async fn open(address: &str, path: &str, message: &impl prost::Message, timeout: &str) -> Self {
        let encoded = message.encode_to_vec();
        let mut body = vec![0];
        body.extend_from_slice(&u32::try_from(encoded.len()).expect("small").to_be_bytes());
        body.extend_from_slice(&encoded);
        let response = send(
            address,
            "POST",
            path,
            &[
                ("content-type", "application/grpc-web+proto"),
                ("x-grpc-web", "1"),
                ("grpc-timeout", timeout),
            ],
            body,
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("grpc-status")
                .map(|value| value.to_str().unwrap_or_default().to_owned()),
            None,
            "the stream opened (no trailers-only error)"
        );
        Self {
            body: response.into_body(),
            buffer: Vec::new(),
        }
    }

    /// The next frame, within 15 s; `None` when the body ended.
    async fn next(&mut self) -> Option<WebFrame> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if self.buffer.len() >= 5 {
                let length = u32::from_be_bytes([
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                    self.buffer[4],
                ]) as usize;
                if self.buffer.len() >= 5 + length {
                    let flags = self.buffer[0];
                    let payload = self.buffer[5..5 + length].to_vec();
                    self.buffer.drain(..5 + length);
                    return Some(if flags & 0x80 == 0 {
                        WebFrame::Message(payload)
                    } else {
                        WebFrame::Trailers(String::from_utf8_lossy(&payload).into_owned())
                    });
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .expect("a frame within 15 s");
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => panic!("stream broken: {error}"),
                None => return None,
            }
        }
    }

    async fn message(&mut self) -> WatchRentalHistoryResponse {
        match self.next().await {
            Some(WebFrame::Message(bytes)) => {
                WatchRentalHistoryResponse::decode(bytes.as_slice()).expect("message")
            }
            Some(WebFrame::Trailers(trailers)) => panic!("stream ended early: {trailers}"),
            None => panic!("body ended without trailers"),
        }
    }

    /// Reads until the trailers; returns them.
    async fn trailers(&mut self) -> String {
        loop {
            match self.next().await {
                Some(WebFrame::Message(_)) => {}
                Some(WebFrame::Trailers(trailers)) => return trailers,
                None => panic!("body ended without trailers"),
            }
        }
    }
}

const WATCH: &str = "/bookmesh.rental.v1.RentalService/WatchRentalHistory";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_watches_a_saga_move_over_grpc_web_until_the_stream_ends() {
    let mut mesh = start(|_| {}).await;
    let member = post_json(
        &mesh,
        "bookmesh.member.v1.MemberService/RegisterMember",
        json!({"name": "Ada", "email": format!("{}@example.org", uuid::Uuid::now_v7().simple())}),
    )
    .await["member"]["member_id"]
        .as_str()
        .expect("member id")
        .to_owned();
    let book = post_json(
        &mesh,
        "bookmesh.book.v1.BookService/RegisterBook",
        json!({
            "title": "Snow Crash", "author": "Neal Stephenson", "isbn": "9780441013593",
            "publisher": "Bantam", "published_on": "1992-06-01",
            "classification": "Fiction", "location": "Shelf 3"
        }),
    )
    .await["book"]["book_id"]
        .as_str()
        .expect("book id")
        .to_owned();

    let request = WatchRentalHistoryRequest {
        member_id: member.clone(),
    };
    let mut stream = GrpcWebStream::open(&mesh.gateway, WATCH, &request, "60S").await;
    assert!(stream.message().await.sagas.is_empty(), "never rented yet");
    post_json(
        &mesh,
        "bookmesh.rental.v1.RentalService/RentBook",
        json!({"member_id": member, "book_id": book}),
    )
    .await;
    // The saga's moves arrive as they happen, until RENTED.
    let mut seen = Vec::new();
    loop {
        let message = stream.message().await;
        let saga = message.sagas.iter().find(|saga| saga.book_id == book);
        if let Some(saga) = saga {
            seen.push(saga.state());
            if saga.state() == ItemState::Rented {
                assert_eq!(saga.steps.len(), 3, "{saga:?}");
                break;
            }
        }
    }
    assert_eq!(seen.last(), Some(&ItemState::Rented));

    // Stopping the gateway ends open streams with UNAVAILABLE (the console watches again,
    // elsewhere), instead of holding the drain.
    let stopping = mesh.gateway_server.take().expect("gateway");
    let (trailers, ()) = tokio::join!(stream.trailers(), stopping.stop());
    assert!(trailers.contains("grpc-status:14"), "{trailers}");

    // A stream ends with OK at the caller's deadline.
    let mesh = start(|_| {}).await;
    let mut short = GrpcWebStream::open(&mesh.gateway, WATCH, &request, "1S").await;
    short.message().await;
    let trailers = short.trailers().await;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // JSON serves the unary methods only.
    let (status, _, answer) = call(
        &mesh.gateway,
        "POST",
        WATCH,
        &[("content-type", "application/json")],
        &json!({"member_id": member}).to_string(),
    )
    .await;
    assert_eq!(status, 501, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_sign_in_signs_tokens_the_services_would_verify_and_only_when_on() {
    let pki = tempfile::tempdir().expect("dir");
    bookmesh::identity::pki::ensure_token_keys(pki.path()).expect("keys");
    let dir = pki.path().to_owned();
    let mesh = start(move |config| {
        config.dev_sign_in = true;
        config.identity.pki_dir = dir;
    })
    .await;
    let (status, _, config) = call(&mesh.gateway, "GET", "/auth/config", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(config["dev_sign_in"], json!(true));
    let verifier = bookmesh::auth::TokenVerifier::from_file(
        &pki.path().join("jwt.pub"),
        "bookmesh-dev",
        "bookmesh",
    )
    .expect("verifier");
    let sign_in = |body: Value| {
        let gateway = mesh.gateway.clone();
        async move {
            let (status, _, answer) = call(
                &gateway,
                "POST",
                "/auth/dev-token",
                &[("content-type", "application/json")],
                &body.to_string(),
            )
            .await;
            (status, answer)
        }
    };
    let (status, staff) = sign_in(json!({"role": "admin"})).await;
    assert_eq!(status, 200, "{staff}");
    let claims = verifier
        .verify(&format!(
            "Bearer {}",
            staff["token"].as_str().expect("token")
        ))
        .expect("a token the services accept");
    assert_eq!(claims.roles, ["librarian", "admin"]);
    let member = uuid::Uuid::now_v7().to_string();
    let (status, answer) = sign_in(json!({"role": "member", "member_id": member})).await;
    assert_eq!(status, 200, "{answer}");
    let claims = verifier
        .verify(&format!(
            "Bearer {}",
            answer["token"].as_str().expect("token")
        ))
        .expect("valid");
    assert_eq!(
        (claims.subject, claims.roles),
        (member, vec!["member".to_owned()])
    );
    // A page elsewhere that rebinds its name to this machine gets nothing.
    for (name, value) in [
        ("host", "rebind.example:8080"),
        ("origin", "http://rebind.example"),
    ] {
        let (status, _, _) = call(
            &mesh.gateway,
            "POST",
            "/auth/dev-token",
            &[("content-type", "application/json"), (name, value)],
            r#"{"role":"admin"}"#,
        )
        .await;
        assert_eq!(status, 403, "{name}: {value}");
    }
    for bad in [
        json!({"role": "member"}),
        json!({"role": "root"}),
        json!({"role": "admin", "extra": 1}),
    ] {
        let (status, answer) = sign_in(bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["code"], json!("invalid_argument"));
    }

    // Off (the default, and every deployment but make run): nothing is signed.
    let off = start(|_| {}).await;
    let (status, _, _) = call(
        &off.gateway,
        "POST",
        "/auth/dev-token",
        &[("content-type", "application/json")],
        r#"{"role":"admin"}"#,
    )
    .await;
    assert_eq!(status, 404);
    let (_, _, config) = call(&off.gateway, "GET", "/auth/config", &[], "").await;
    assert_eq!(config["dev_sign_in"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_view_and_fault_switches_read_the_services_admin_ports() {
    let mesh = start(|_| {}).await;
    let (status, _, view) = call(&mesh.gateway, "GET", "/api/mesh", &[], "").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = view["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|service| service["name"].as_str())
        .collect();
    assert_eq!(names, ["member", "book", "rental", "gateway"]);
    assert_eq!(view["services"][1]["replicas"][0]["up"], json!(true));
    assert_eq!(view["services"][1]["replicas"][0]["ready"], json!(true));
    // Calls made now show up as a request rate on a later scrape.
    for _ in 0..20 {
        call(
            &mesh.gateway,
            "POST",
            "/bookmesh.book.v1.BookService/ListBooks",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    }
    let book = eventually("a request rate for book", Duration::from_secs(10), || {
        let gateway = mesh.gateway.clone();
        async move {
            let (_, _, view) = call(&gateway, "GET", "/api/mesh", &[], "").await;
            let book = view["services"][1].clone();
            (book["request_rate"].as_f64().unwrap_or_default() > 0.0).then_some(book)
        }
    })
    .await;
    assert!(book["p99_ms"].as_f64().is_some(), "{book}");
    assert_eq!(book["error_rate"], json!(0.0));
    let gateway = &view["services"][3];
    assert!(
        gateway["breakers"]
            .as_array()
            .is_some_and(|breakers| breakers.iter().any(|b| b["upstream"] == json!("book"))),
        "{gateway}"
    );

    // Faults: listed per replica, switched on every replica of a service, and off again.
    bookmesh::faults::enable("book", &[]).expect("faults");
    let (status, _, faults) = call(&mesh.gateway, "GET", "/api/faults", &[], "").await;
    assert_eq!(status, 200);
    let book_faults = &faults["services"][1];
    assert_eq!(book_faults["name"], json!("book"));
    assert_eq!(book_faults["replicas"][0]["enabled"], json!(true));
    assert!(
        book_faults["replicas"][0]["faults"]
            .as_array()
            .is_some_and(|faults| faults.iter().any(|f| f["name"] == json!("latency"))),
        "{book_faults}"
    );
    let (status, _, answer) = call(
        &mesh.gateway,
        "PUT",
        "/api/faults/book/latency",
        &[("content-type", "application/json")],
        r#"{"fixed_ms": 1, "method": "GetBook"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["replicas"][0]["status"], json!(200), "{answer}");
    let (_, _, faults) = call(&mesh.gateway, "GET", "/api/faults", &[], "").await;
    let latency = faults["services"][1]["replicas"][0]["faults"]
        .as_array()
        .and_then(|faults| {
            faults
                .iter()
                .find(|f| f["name"] == json!("latency"))
                .cloned()
        })
        .expect("latency");
    assert_eq!(latency["active"], json!(true));
    let (_, _, answer) = call(&mesh.gateway, "DELETE", "/api/faults/book/latency", &[], "").await;
    assert_eq!(answer["replicas"][0]["status"], json!(200), "{answer}");
    // Unknown services and malformed names go nowhere.
    for path in [
        "/api/faults/nope/latency",
        "/api/faults/book/../../x",
        "/api/faults/book",
    ] {
        let (status, _, _) = call(&mesh.gateway, "PUT", path, &[], "{}").await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_safe_headers_and_nothing_outside_its_folder() {
    let site = tempfile::tempdir().expect("dir");
    std::fs::create_dir(site.path().join("assets")).expect("assets");
    std::fs::write(
        site.path().join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .expect("index");
    std::fs::write(site.path().join("assets/app-1a2b.js"), "console.log(1)").expect("js");
    let dir = site.path().to_owned();
    let mesh = start(move |config| config.console_dir = Some(dir)).await;
    let (status, headers, body) = call(&mesh.gateway, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!("<!doctype html><title>console</title>"));
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    // `curl -I`: the same headers, no body.
    let (status, head, body) = call(&mesh.gateway, "HEAD", "/", &[], "").await;
    assert_eq!(
        (status, &head["content-type"], body),
        (200, &headers["content-type"], json!(""))
    );
    assert!(
        headers["content-security-policy"]
            .to_str()
            .is_ok_and(|csp| csp.contains("default-src 'self'")),
        "{headers:?}"
    );
    let (status, headers, _) = call(&mesh.gateway, "GET", "/assets/app-1a2b.js", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert!(
        headers["cache-control"]
            .to_str()
            .is_ok_and(|cache| cache.contains("immutable"))
    );
    for path in [
        "/missing.js",
        "/../Cargo.toml",
        "/assets/%2e%2e/x",
        "/assets",
    ] {
        let (status, _, _) = call(&mesh.gateway, "GET", path, &[], "").await;
        assert_eq!(status, 404, "{path}");
    }
    // The copy built into the binary: the console, or a page saying how to build it.
    let embedded = start(|_| {}).await;
    let (status, headers, _) = call(&embedded.gateway, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
}
