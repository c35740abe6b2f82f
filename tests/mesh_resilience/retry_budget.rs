//! Proof 4: the retry budget bounds retries in an outage.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::testing::{connect, wait_until_serving};
use tonic::Code;

use crate::helpers::{
    BookAndRental, Dir, ScriptedMember, book_and_rental, register_books, rent_request,
    serve_scripted,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_4_retries_stay_within_the_budget_when_every_call_fails() {
    let dir = Dir::new();
    std::fs::write(dir.path("hosts"), "").expect("hosts");
    let failing = ScriptedMember::new(Duration::ZERO, true);
    let member_url = serve_scripted(failing.clone()).await;
    let BookAndRental {
        book,
        book_address,
        rental,
        rental_address,
    } = book_and_rental(
        &dir,
        &member_url,
        &[
            ("BOOKMESH_UPSTREAM_MAX_ATTEMPTS", "5".into()),
            // Keep the breaker out of the way: this proof is about the retry budget alone.
            (
                "BOOKMESH_UPSTREAM_OPTIONS",
                "member.breaker_minimum_calls=1000000".into(),
            ),
        ],
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
    const CALLS: u64 = 50;
    for _ in 0..CALLS {
        let status = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await
            .expect_err("member always fails");
        assert_eq!(status.code(), Code::Unavailable);
    }
    let attempts = failing.calls.load(Ordering::Relaxed);
    println!(
        "retry budget: {CALLS} calls made {attempts} attempts (5 per call without a budget: {})",
        CALLS * 5
    );
    assert!(attempts >= CALLS, "every call made at least one attempt");
    assert!(
        attempts <= CALLS + 5,
        "the token bucket (10 tokens, retry above 5) allows about 5 retries in an outage, got {}",
        attempts - CALLS
    );
    rental.stop().await;
    book.stop().await;
}
