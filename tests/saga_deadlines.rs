//! Saga deadlines, against real processes: a rental the book service never answers is
//! reported stuck (by the consistency check and a metric), then given up at the rental
//! service's step timeout and compensated; when the book service comes back and reserves the
//! copy late, it frees it again, and everything ends consistent.
//!
//! The book service is cut off from the rental feed by starting it with a rental endpoint
//! where nothing listens: RentBook still finds the book (rental calls book directly), but
//! ItemRented is not read until book restarts with the right endpoint.

use std::time::Duration;

use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::book::v1::{BookStatus, GetBookRequest};
use bookmesh::proto::member::v1::GetMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::proto::rental::v1::{
    GetRentalCardRequest, GetRentalHistoryRequest, ItemState, RentBookRequest,
};
use bookmesh::testing::{connect, wait_until_serving};
use bookmesh_check::{Endpoints, check, check_until_consistent};
use bookmesh_mesh_tests::{ServiceProcess, free_port, http_get};

const STEP_TIMEOUT_SECS: u64 = 3;

/// Polls `probe` until it returns `Some`, or fails the test with `what` after 30 s.
async fn eventually<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    probe: impl FnMut() -> Fut,
) -> T {
    bookmesh::testing::eventually(what, Duration::from_secs(30), probe).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rental_the_book_service_never_answers_is_reported_then_given_up_and_freed() {
    let dir = std::env::temp_dir().join(format!("bookmesh-deadline-{}", uuid::Uuid::now_v7()));
    let address = || format!("127.0.0.1:{}", free_port());
    let (book, member, rental, rental_admin) = (address(), address(), address(), address());
    let nowhere = address();
    let env = |name: &str, listen: &str, rental_feed: &str| {
        vec![
            // The cut-off below is the feed's endpoint; JetStream would deliver regardless.
            ("BOOKMESH_EVENT_TRANSPORT", "feed".to_owned()),
            ("BOOKMESH_LISTEN", listen.to_owned()),
            ("BOOKMESH_DATA_DIR", dir.join(name).display().to_string()),
            ("BOOKMESH_RENTAL_ENDPOINTS", format!("http://{rental_feed}")),
            ("BOOKMESH_MEMBER_ENDPOINTS", format!("http://{member}")),
            ("BOOKMESH_BOOK_ENDPOINTS", format!("http://{book}")),
            (
                "BOOKMESH_SAGA_STEP_TIMEOUT",
                format!("{STEP_TIMEOUT_SECS}s"),
            ),
            ("BOOKMESH_SAGA_SWEEP_INTERVAL", "200ms".to_owned()),
            ("BOOKMESH_ADMIN_LISTEN", rental_admin.clone()),
        ]
    };
    let start = |name: &'static str, listen: String, rental_feed: String| {
        let mut env = env(name, &listen, &rental_feed);
        if name != "rental" {
            env.retain(|(key, _)| *key != "BOOKMESH_ADMIN_LISTEN");
        }
        async move {
            let process = ServiceProcess::spawn(name, &format!("{name}-service"), &env);
            wait_until_serving(&format!("http://{listen}"), Duration::from_secs(60)).await;
            process
        }
    };
    let member_process = start("member", member.clone(), rental.clone()).await;
    let cut_off_book = start("book", book.clone(), nowhere.clone()).await;
    let rental_process = start("rental", rental.clone(), rental.clone()).await;

    let members =
        MemberServiceClient::new(connect(&format!("http://{member}")).await.expect("member"));
    let mut books = BookServiceClient::new(connect(&format!("http://{book}")).await.expect("book"));
    let mut rentals =
        RentalServiceClient::new(connect(&format!("http://{rental}")).await.expect("rental"));
    let (member_id, book_id) = bookmesh::testing::register_member_and_book(
        &format!("http://{member}"),
        &format!("http://{book}"),
        "Waiting for Godot",
    )
    .await;
    let rented = rentals
        .rent_book(RentBookRequest {
            member_id: member_id.clone(),
            book_id: book_id.clone(),
        })
        .await
        .expect("rent")
        .into_inner()
        .rental_card
        .expect("card");
    assert_eq!(rented.rented_items[0].state(), ItemState::Pending);

    // Before the timeout: the consistency check names the stuck step.
    let endpoints = Endpoints {
        identity: bookmesh::identity::Identity::insecure(bookmesh::identity::SpiffeId::new(
            "bookmesh.local",
            "bookmesh",
            "check",
        )),
        book: format!("http://{book}"),
        member: format!("http://{member}"),
        rental: format!("http://{rental}"),
        bestbook: None,
        stuck_after: Duration::from_millis(500),
    };
    let stuck = eventually("the check to report the stuck rental", || async {
        let report = check(&endpoints).await.expect("check");
        (!report.stuck.is_empty()).then_some(report.stuck)
    })
    .await;
    assert!(
        stuck[0].contains(&book_id) && stuck[0].contains("PENDING"),
        "{stuck:?}"
    );

    // At the timeout: the rental is canceled with the reason, and the member service takes
    // its points back (RentCanceled).
    let canceled = eventually("the rental to time out", || async {
        let card = rentals
            .clone()
            .get_rental_card(GetRentalCardRequest {
                member_id: member_id.clone(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .rental_card?;
        card.canceled_items.first().cloned()
    })
    .await;
    assert!(canceled.cancel_reason.contains("timed out"), "{canceled:?}");
    eventually("the points to be taken back", || async {
        let points = members
            .clone()
            .get_member(GetMemberRequest {
                member_id: member_id.clone(),
            })
            .await
            .ok()?
            .into_inner()
            .member?
            .points;
        (points == 0).then_some(())
    })
    .await;
    let (_, metrics) = http_get(&rental_admin, "/metrics").await.expect("scrape");
    assert!(
        metrics.contains(r#"bookmesh_saga_timeouts_total{service="rental",step="reserve_book"} 1"#),
        "{}",
        metrics
            .lines()
            .filter(|line| line.contains("bookmesh_saga"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The book service comes back and reads the feed late: it reserves the copy for the
    // canceled rental, then reads RentCanceled and frees it. The late BookReserved changes
    // nothing on the card.
    cut_off_book.stop().await;
    let book_process = start("book", book.clone(), rental.clone()).await;
    eventually(
        "the late reservation to reach the rental history",
        || async {
            let sagas = rentals
                .clone()
                .get_rental_history(GetRentalHistoryRequest {
                    member_id: member_id.clone(),
                })
                .await
                .ok()?
                .into_inner()
                .sagas;
            sagas
                .iter()
                .flat_map(|saga| &saga.steps)
                .any(|step| step.event_type == "bookmesh.book.v1.BookReserved")
                .then_some(())
        },
    )
    .await;
    let report = check_until_consistent(&endpoints, Duration::from_secs(30))
        .await
        .expect("check");
    assert!(report.is_consistent(), "{report:?}");
    let copy = books
        .get_book(GetBookRequest {
            book_id: book_id.clone(),
        })
        .await
        .expect("get book")
        .into_inner()
        .book
        .expect("book");
    assert_eq!(copy.status(), BookStatus::Available, "the copy was freed");
    let card = rentals
        .get_rental_card(GetRentalCardRequest {
            member_id: member_id.clone(),
            ..Default::default()
        })
        .await
        .expect("card")
        .into_inner()
        .rental_card
        .expect("card");
    assert!(card.rented_items.is_empty(), "{card:?}");
    assert_eq!(card.canceled_items.len(), 1, "{card:?}");
    let (_, metrics) = http_get(&rental_admin, "/metrics").await.expect("scrape");
    assert!(
        !metrics.contains(r#"outcome="dead_lettered""#),
        "the late answer is no poison: {}",
        metrics
            .lines()
            .filter(|line| line.contains("bookmesh_consumer_events_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    for process in [rental_process, book_process, member_process] {
        process.stop().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}
