//! Proof 2: the circuit breaker opens on a hung upstream and closes again by itself.

use std::time::{Duration, Instant};

use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::testing::{connect, wait_until_serving};
use bookmesh_mesh_tests::{free_port, http_get};
use nix::sys::signal::Signal;
use tonic::Code;

use crate::helpers::{
    BookAndRental, Dir, ScriptedMember, book_and_rental, is_mesh_failure, member_replica,
    register_books, register_member, rent_request, serve_scripted,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_2_a_hung_upstream_trips_the_breaker_and_it_closes_again_by_itself() {
    let dir = Dir::new();
    std::fs::write(dir.path("hosts"), "").expect("hosts");
    let member_address = format!("127.0.0.1:{}", free_port());
    let member = member_replica(&dir, &member_address);
    let admin_address = format!("127.0.0.1:{}", free_port());
    let BookAndRental {
        book,
        book_address,
        rental,
        rental_address,
    } = book_and_rental(&dir, &format!("http://{member_address}"), &[
        ("BOOKMESH_ADMIN_LISTEN", admin_address.clone()),
        (
        "BOOKMESH_UPSTREAM_OPTIONS",
        "book.call_timeout=300ms,book.max_attempts=1,book.breaker_window=10,book.breaker_minimum_calls=5,book.breaker_open_duration=1s".into(),
        ),
    ]);
    for address in [&member_address, &book_address, &rental_address] {
        wait_until_serving(&format!("http://{address}"), Duration::from_secs(60)).await;
    }
    let members = vec![register_member(&format!("http://{member_address}")).await];
    let books = register_books(&format!("http://{book_address}"), 40).await;
    let mut client = RentalServiceClient::new(
        connect(&format!("http://{rental_address}"))
            .await
            .expect("connect"),
    );
    client
        .rent_book(rent_request(&members, &books[..1], Duration::from_secs(3)))
        .await
        .expect("a rent while everything is up");

    // The book service hangs (stopped, not dead: connections stay open, calls time out).
    book.signal(Signal::SIGSTOP);
    let mut calls_until_open = 0;
    loop {
        calls_until_open += 1;
        assert!(calls_until_open <= 30, "breaker never opened");
        let status = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await
            .expect_err("book service hangs");
        if status.message().contains("unavailable")
            && rental.count_lines(&["circuit breaker opened"]) > 0
        {
            break;
        }
    }
    let (_, metrics) = http_get(&admin_address, "/metrics").await.expect("scrape");
    assert!(
        metrics.contains("bookmesh_client_circuit_breaker_state{upstream=\"book\"} 1"),
        "the open breaker is exported:\n{metrics}"
    );
    let mut fast_failures = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let status = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await
            .expect_err("breaker open");
        fast_failures.push(started.elapsed());
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    fast_failures.sort();
    println!(
        "breaker: opened after {calls_until_open} calls; while open RentBook fails in {:?} (median), {:?} (max) instead of the 300 ms book timeout",
        fast_failures[10], fast_failures[19]
    );
    assert!(
        fast_failures[19] < Duration::from_millis(150),
        "failing fast, not waiting for the timeout"
    );

    // The book service comes back: half-open trial calls close the breaker, no operator action.
    book.signal(Signal::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let result = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await;
        match result {
            Ok(_) => break,
            Err(status) if !is_mesh_failure(&status) => break,
            Err(_) => {
                assert!(Instant::now() < deadline, "breaker did not close");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        rental.count_lines(&["half-open"]) > 0,
        "went through half-open"
    );
    // The trial calls (3) must all succeed before the breaker closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rental.count_lines(&["circuit breaker closed"]) == 0 {
        assert!(
            Instant::now() < deadline,
            "breaker did not close after successful trials"
        );
        let _ = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await;
    }

    rental.stop().await;
    book.stop().await;
    member.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_run_out_of_their_own_time_do_not_open_the_breaker_for_everyone() {
    let dir = Dir::new();
    std::fs::write(dir.path("hosts"), "").expect("hosts");
    // A healthy member that takes 50 ms: within rental's 2 s timeout for it, beyond the
    // budget of a caller sending a 10 ms deadline.
    let member = ScriptedMember::new(Duration::from_millis(50), false);
    let member_url = serve_scripted(member.clone()).await;
    let admin_address = format!("127.0.0.1:{}", free_port());
    let BookAndRental {
        book,
        book_address,
        rental,
        rental_address,
    } = book_and_rental(&dir, &member_url, &[
        ("BOOKMESH_ADMIN_LISTEN", admin_address.clone()),
        (
            "BOOKMESH_UPSTREAM_OPTIONS",
            "member.breaker_window=10,member.breaker_minimum_calls=5,book.breaker_window=10,book.breaker_minimum_calls=5".into(),
        ),
    ]);
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
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let status = client
            .rent_book(rent_request(&members, &books, Duration::from_millis(10)))
            .await
            .expect_err("10 ms is too short for a 50 ms member");
        *codes.entry(format!("{:?}", status.code())).or_insert(0) += 1;
    }
    println!("tiny deadlines: RentBook answered {codes:?}");
    assert!(
        member.calls.load(std::sync::atomic::Ordering::Relaxed) >= 5,
        "enough calls reached the member to open the breaker if they counted"
    );
    let (_, metrics) = http_get(&admin_address, "/metrics").await.expect("scrape");
    for upstream in ["member", "book"] {
        assert!(
            metrics.contains(&format!(
                "bookmesh_client_circuit_breaker_state{{upstream=\"{upstream}\"}} 0"
            )),
            "{upstream}'s breaker stayed closed:\n{metrics}"
        );
    }
    // An ordinary caller right after: the member answers (NOT_FOUND, a business answer).
    let status = client
        .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
        .await
        .expect_err("the scripted member knows no one");
    assert!(
        !is_mesh_failure(&status),
        "an ordinary call goes through: {status:?}"
    );
    assert_eq!(rental.count_lines(&["circuit breaker opened"]), 0);
    rental.stop().await;
    book.stop().await;
}
