//! WatchRentalHistory: the saga timeline streamed as it moves, and the stream's bounds.

use std::time::Duration;

use bookmesh::proto::rental::v1::{
    ItemState, RentalSaga, ReturnBookRequest, WatchRentalHistoryRequest, WatchRentalHistoryResponse,
};
use tonic::{Code, Streaming};
use tonic_types::StatusExt as _;

use crate::helpers::{start_mesh, start_mesh_with};

fn watch_request(member_id: &str) -> WatchRentalHistoryRequest {
    WatchRentalHistoryRequest {
        member_id: member_id.to_owned(),
    }
}

/// Reads messages until one shows the saga of `book_id` in `state`; fails after 15 s.
async fn until_saga(
    stream: &mut Streaming<WatchRentalHistoryResponse>,
    book_id: &str,
    state: ItemState,
) -> RentalSaga {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no message showing {state:?} within 15 s"))
            .expect("stream healthy")
            .expect("stream open");
        if let Some(saga) = message
            .sagas
            .into_iter()
            .find(|saga| saga.book_id == book_id && saga.state() == state)
        {
            return saga;
        }
    }
}

fn step_names(saga: &RentalSaga) -> Vec<&str> {
    saga.steps
        .iter()
        .map(|step| step.event_type.as_str())
        .collect()
}

#[tokio::test]
async fn a_watch_shows_each_saga_move_from_no_card_to_rented_to_returned() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Watched").await;
    let mut stream = mesh
        .rental
        .watch_rental_history(watch_request(&member))
        .await
        .expect("watch")
        .into_inner();
    // A member who never rented: the first message says so, and the stream stays open.
    let first = stream.message().await.expect("first").expect("open");
    assert!(first.sagas.is_empty());

    mesh.rent(&member, &book).await.expect("rent");
    let rented = until_saga(&mut stream, &book, ItemState::Rented).await;
    assert_eq!(
        step_names(&rented),
        [
            "bookmesh.rental.v1.ItemRented",
            "bookmesh.book.v1.BookReserved",
            "bookmesh.rental.v1.RentConfirmed"
        ]
    );

    mesh.rental
        .return_book(ReturnBookRequest {
            member_id: member.clone(),
            book_id: book.clone(),
        })
        .await
        .expect("return");
    let returned = until_saga(&mut stream, &book, ItemState::Returned).await;
    assert_eq!(
        step_names(&returned)[..4],
        [
            "bookmesh.rental.v1.ItemRented",
            "bookmesh.book.v1.BookReserved",
            "bookmesh.rental.v1.RentConfirmed",
            "bookmesh.rental.v1.ItemReturned",
        ]
    );
}

#[tokio::test]
async fn watchers_are_bounded_and_the_callers_deadline_ends_a_stream_with_ok() {
    let mut mesh = start_mesh_with(|config| config.max_history_watchers = 1).await;
    let member = mesh.member().await;

    let mut short = tonic::Request::new(watch_request(&member));
    short.set_timeout(Duration::from_millis(500));
    let mut first = mesh
        .rental
        .watch_rental_history(short)
        .await
        .expect("first watcher")
        .into_inner();
    assert!(first.message().await.expect("message").is_some());

    // The only slot is taken.
    let refused = mesh
        .rental
        .watch_rental_history(watch_request(&member))
        .await
        .expect_err("second watcher refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.get_details_error_info().map(|info| info.reason),
        Some("HISTORY_WATCHERS_EXHAUSTED".to_owned())
    );

    // The deadline ends the first stream cleanly, and frees its slot.
    let ended = tokio::time::timeout(Duration::from_secs(10), first.message())
        .await
        .expect("the stream ends by its deadline");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    bookmesh::testing::eventually("the slot freed", Duration::from_secs(10), || {
        let mut rental = mesh.rental.clone();
        let member = member.clone();
        async move {
            rental
                .watch_rental_history(watch_request(&member))
                .await
                .ok()
        }
    })
    .await;
}

#[tokio::test]
async fn a_watch_of_a_malformed_member_id_is_refused_with_the_field() {
    let mut mesh = start_mesh().await;
    let refused = mesh
        .rental
        .watch_rental_history(watch_request("not-a-uuid"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let violations = refused
        .get_details_bad_request()
        .map(|bad| bad.field_violations)
        .unwrap_or_default();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "member_id");
}

#[tokio::test]
async fn one_member_cannot_take_every_watcher_slot() {
    let mut mesh = start_mesh().await;
    let (member, other) = (mesh.member().await, mesh.member().await);
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(
            mesh.rental
                .watch_rental_history(watch_request(&member))
                .await
                .expect("within the member's share")
                .into_inner(),
        );
    }
    let refused = mesh
        .rental
        .watch_rental_history(watch_request(&member))
        .await
        .expect_err("a ninth stream for one member");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.get_details_error_info().map(|info| info.reason),
        Some("HISTORY_WATCHERS_PER_MEMBER_EXHAUSTED".to_owned())
    );
    // Others are not affected, and a closed stream gives its share back.
    mesh.rental
        .watch_rental_history(watch_request(&other))
        .await
        .expect("another member");
    drop(open.pop());
    bookmesh::testing::eventually("the share given back", Duration::from_secs(10), || {
        let mut rental = mesh.rental.clone();
        let member = member.clone();
        async move {
            rental
                .watch_rental_history(watch_request(&member))
                .await
                .ok()
        }
    })
    .await;
}
