//! A caller's `connect-timeout-ms` is the call's deadline all the way down: against a book
//! service that never answers GetBook (an injected hang, docs/faults.md), the gateway answers
//! 504 deadline_exceeded at the caller's deadline, not at its own timeouts. Its own test
//! binary: the fault is process-wide, and this process runs the book service.

use std::time::{Duration, Instant};

use bookmesh::testing::{RunningServer, TestDatabase, bind, url_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_ends_the_call_upstream() {
    let db = TestDatabase::fresh().await;
    let book = bind().await;
    let book_url = url_of(&book);
    let config = book_service::Config::for_tests(&db.url, "http://127.0.0.1:1");
    let _book =
        RunningServer::start_on(book, |l, s| bookmesh::service::serve_until(config, l, s)).await;
    bookmesh::faults::enable("book", &[]).expect("faults");
    bookmesh::faults::set("hang", br#"{"method": "GetBook"}"#).expect("hang");
    let listener = bind().await;
    let gateway = listener.local_addr().expect("address").to_string();
    let config = gateway_service::Config::for_tests(
        &book_url,
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
    );
    let _gateway =
        RunningServer::spawn_on(listener, |l, s| gateway_service::serve_until(config, l, s));

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!(r#"{{"book_id": "{}"}}"#, uuid::Uuid::now_v7());
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(&gateway)
        .await
        .expect("connect");
    stream
        .write_all(
            format!(
                "POST /bookmesh.book.v1.BookService/GetBook HTTP/1.1\r\nHost: {gateway}\r\n\
                 Connection: close\r\ncontent-type: application/json\r\n\
                 connect-timeout-ms: 300\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let took = started.elapsed();
    assert!(response.starts_with("HTTP/1.1 504"), "{response}");
    assert!(
        response.contains(r#""code":"deadline_exceeded""#),
        "{response}"
    );
    // At the caller's 300 ms (each hop answers a few milliseconds before its deadline, to be
    // heard before the caller gives up): the client stack's call timeout (2 s) and the
    // gateway's request timeout (10 s) are both much longer.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "the caller's deadline, not a default: {took:?}"
    );
}
