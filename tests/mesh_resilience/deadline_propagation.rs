//! Proof 3: the caller's deadline travels upstream.

use std::time::{Duration, Instant};

use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::testing::{connect, wait_until_serving};
use tonic::Code;

use crate::helpers::{
    BookAndRental, Dir, ScriptedMember, book_and_rental, register_books, rent_request,
    serve_scripted,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_3_a_slow_upstream_gets_the_callers_smaller_deadline_and_the_caller_answers_in_time()
{
    let dir = Dir::new();
    std::fs::write(dir.path("hosts"), "").expect("hosts");
    let slow = ScriptedMember::new(Duration::from_secs(5), false);
    let member_url = serve_scripted(slow.clone()).await;
    // The rental's own timeout for member calls is 2 s; the client's deadline is 400 ms.
    let BookAndRental {
        book,
        book_address,
        rental,
        rental_address,
    } = book_and_rental(&dir, &member_url, &[]);
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
