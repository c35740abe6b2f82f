//! Proof 3: the caller's deadline travels upstream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::testing::{connect, wait_until_serving};
use bookmesh_mesh_tests::free_port;
use tonic::Code;

use crate::helpers::{
    Dir, ScriptedMember, book_process, register_books, rent_request, rental_process, serve_scripted,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_3_a_slow_upstream_gets_the_callers_smaller_deadline_and_the_caller_answers_in_time()
{
    let dir = Dir::new();
    std::fs::write(dir.path("hosts"), "").expect("hosts");
    let slow = ScriptedMember {
        delay: Duration::from_secs(5),
        fail: false,
        calls: Arc::default(),
        seen_timeouts: Arc::default(),
    };
    let member_url = serve_scripted(slow.clone()).await;
    let book_address = format!("127.0.0.1:{}", free_port());
    let book = book_process(&dir, &book_address);
    let rental_address = format!("127.0.0.1:{}", free_port());
    // The rental's own timeout for member calls is 2 s; the client's deadline is 400 ms.
    let rental = rental_process(
        &dir,
        &rental_address,
        &member_url,
        &format!("http://{book_address}"),
        &[],
    );
    for address in [&book_address, &rental_address] {
        wait_until_serving(&format!("http://{address}"), Duration::from_secs(60)).await;
    }
    let books = register_books(&format!("http://{book_address}"), 1).await;
    let members = vec![uuid::Uuid::now_v7().to_string()];
    let mut client = RentalServiceClient::new(
        connect(&format!("http://{rental_address}"))
            .await
            .expect("connect"),
    );
    let started = Instant::now();
    let status = client
        .rent_book(rent_request(&members, &books, Duration::from_millis(400)))
        .await
        .expect_err("member is too slow");
    let took = started.elapsed();
    println!(
        "deadline: RentBook answered {:?} after {took:?}; member saw grpc-timeout {:?}",
        status.code(),
        slow.seen_timeouts.lock().expect("t")
    );
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        took < Duration::from_millis(1000),
        "answered within (about) its own deadline"
    );
    let seen = slow.seen_timeouts.lock().expect("timeouts").clone();
    assert!(!seen.is_empty(), "the call reached the member");
    for timeout in seen {
        let budget =
            bookmesh::deadline::parse_grpc_timeout(&timeout).expect("a grpc-timeout was sent");
        assert!(
            budget <= Duration::from_millis(400),
            "member saw {budget:?}, more than the caller's 400 ms"
        );
    }
    rental.stop().await;
    book.stop().await;
}
