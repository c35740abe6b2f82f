//! Faults at a server's edge: errors, hangs, latency and a database outage.

use std::time::{Duration, Instant};

use bookmesh::proto::book::v1::GetBookRequest;
use bookmesh::proto::rental::v1::RentBookRequest;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{Mesh, eventually};

const BREAKER_STATE: &str = r#"bookmesh_client_circuit_breaker_state{upstream="book"}"#;
const BOOK_ERRORS: &str = r#"bookmesh_faults_injected_total{fault="error",service="book"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_failing_every_call_opens_rentals_breaker_and_rents_fail_fast_until_it_heals() {
    let mesh = Mesh::start().await;
    let (member, book) = mesh.member_and_book("Unlucky").await;
    mesh.fault_on("book", "error", r#"{"code": "UNAVAILABLE"}"#)
        .await;
    assert_eq!(
        mesh.metric(
            "book",
            r#"bookmesh_faults_active{fault="error",service="book"}"#
        )
        .await,
        1.0
    );
    // Within the breaker's window the failures open it.
    let mut calls = 0;
    while mesh.metric("rental", BREAKER_STATE).await != 1.0 {
        let refused = mesh
            .rent(&member, &book)
            .await
            .expect_err("book fails every call");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        calls += 1;
        assert!(calls <= 40, "the breaker never opened");
    }
    // Open: RentBook fails fast, without a call reaching book.
    let reached_book = mesh.metric("book", BOOK_ERRORS).await;
    let started = Instant::now();
    let refused = mesh.rent(&member, &book).await.expect_err("breaker open");
    let took = started.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(
        mesh.metric("book", BOOK_ERRORS).await,
        reached_book,
        "no call reached book while the breaker was open"
    );
    println!("breaker opened after {calls} RentBooks; then RentBook failed in {took:?}");

    // Switched off: the half-open trial closes the breaker by itself, and rents go through.
    mesh.fault_off("book", "error").await;
    eventually("a rent once book heals", || async {
        mesh.rent(&member, &book).await.ok()
    })
    .await;
    // Its half-open trials succeed (a repeat rent still asks book), and it closes.
    eventually("rental's breaker closed", || async {
        let _ = mesh.rent(&member, &book).await;
        (mesh.metric("rental", BREAKER_STATE).await == 0.0).then_some(())
    })
    .await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_calls_cut_short_by_their_callers_do_not_leave_the_breaker_stuck_half_open() {
    let mesh = Mesh::start().await;
    let (member, book) = mesh.member_and_book("Half Open").await;
    // Open rental's breaker to book...
    mesh.fault_on(
        "book",
        "error",
        r#"{"method": "GetBook", "code": "UNAVAILABLE"}"#,
    )
    .await;
    eventually("the breaker open", || async {
        let _ = mesh.rent(&member, &book).await;
        (mesh.metric("rental", BREAKER_STATE).await == 1.0).then_some(())
    })
    .await;
    // ...then let its trial calls hang until their callers give up: no verdict on book.
    mesh.fault_off("book", "error").await;
    mesh.fault_on("book", "hang", r#"{"method": "GetBook"}"#)
        .await;
    // A call after the open duration turns the breaker half-open and is a trial call; it and
    // the next ones end at their caller's 300 ms deadline.
    let impatient_rent = || async {
        let mut request = tonic::Request::new(RentBookRequest {
            member_id: member.clone(),
            book_id: book.clone(),
        });
        request.set_timeout(Duration::from_millis(300));
        let _ = mesh.rentals().await.rent_book(request).await;
    };
    eventually("the breaker half-open", || async {
        impatient_rent().await;
        (mesh.metric("rental", BREAKER_STATE).await == 2.0).then_some(())
    })
    .await;
    for _ in 0..4 {
        impatient_rent().await;
    }
    // Book healthy again: the trial slots came back, trials succeed, rents go through.
    mesh.fault_off("book", "hang").await;
    eventually("a rent after the hang", || async {
        mesh.rent(&member, &book).await.ok()
    })
    .await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_book_ends_rentbook_at_its_deadline_and_leaves_nothing_pending() {
    let mesh = Mesh::start().await;
    let (member, book) = mesh.member_and_book("Never Answered").await;
    mesh.fault_on("book", "hang", r#"{"method": "GetBook"}"#)
        .await;
    let mut request = tonic::Request::new(RentBookRequest {
        member_id: member.clone(),
        book_id: book,
    });
    request.set_timeout(Duration::from_millis(800));
    let started = Instant::now();
    let refused = mesh
        .rentals()
        .await
        .rent_book(request)
        .await
        .expect_err("book never answers");
    assert_eq!(refused.code(), Code::DeadlineExceeded, "{refused:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "at its deadline, not before"
    );
    // Nothing was written: no card, so nothing PENDING.
    assert!(mesh.card(&member).await.is_none(), "no card was made");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_only_the_matching_method() {
    let mesh = Mesh::start().await;
    let (_, book) = mesh.member_and_book("Slow Read").await;
    mesh.fault_on("book", "latency", r#"{"method": "Get*", "fixed_ms": 400}"#)
        .await;
    let mut books = mesh.books().await;
    let started = Instant::now();
    books
        .get_book(GetBookRequest {
            book_id: book.clone(),
        })
        .await
        .expect("slow, but answered");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        mesh.metric(
            "book",
            r#"bookmesh_faults_injected_total{fault="latency",service="book"}"#
        )
        .await,
        1.0
    );
    // ListBooks does not match `Get*`.
    books
        .list_books(bookmesh::proto::book::v1::ListBooksRequest::default())
        .await
        .expect("list");
    assert_eq!(
        mesh.metric(
            "book",
            r#"bookmesh_faults_injected_total{fault="latency",service="book"}"#
        )
        .await,
        1.0,
        "ListBooks was not delayed"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_turns_health_not_serving_and_calls_unavailable_until_it_ends() {
    let mesh = Mesh::start().await;
    let (_, book) = mesh.member_and_book("Offline").await;
    let health = || async {
        HealthClient::new(
            bookmesh::testing::connect(&format!("http://{}", mesh.book.grpc))
                .await
                .expect("connect"),
        )
        .check(HealthCheckRequest {
            service: "bookmesh.book.v1.BookService".into(),
        })
        .await
        .map(|r| r.into_inner().status())
        .ok()
    };
    mesh.fault_on("book", "db-outage", "").await;
    assert_eq!(health().await, Some(ServingStatus::NotServing));
    let refused = mesh
        .books()
        .await
        .get_book(GetBookRequest {
            book_id: book.clone(),
        })
        .await
        .expect_err("the database is out");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // It stays out while the fault is on (the database check fails too)...
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(health().await, Some(ServingStatus::NotServing));
    // ...and comes back by itself once it is off.
    mesh.fault_off("book", "db-outage").await;
    eventually("book SERVING again", || async {
        (health().await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    mesh.books()
        .await
        .get_book(GetBookRequest { book_id: book })
        .await
        .expect("served again");
    mesh.stop().await;
}
