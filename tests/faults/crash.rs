//! A crash at a named saga step: the process aborts there, and after a restart the saga
//! completes, once.

use bookmesh::proto::rental::v1::{ItemState, RentBookRequest};

use crate::helpers::{Mesh, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_publish_completes_the_saga_once_after_a_restart() {
    let mut mesh = Mesh::start().await;
    let (member, book) = mesh.member_and_book("Interrupted").await;
    mesh.fault_on("rental", "crash", r#"{"point": "after-commit"}"#)
        .await;
    // The rent commits (item PENDING, ItemRented in the outbox), then the process dies
    // before answering or publishing.
    let lost = mesh
        .rentals()
        .await
        .rent_book(RentBookRequest {
            member_id: member.clone(),
            book_id: book.clone(),
        })
        .await;
    assert!(lost.is_err(), "the process died mid-call: {lost:?}");
    // A new process (faults are not kept across restarts) publishes what was committed.
    mesh.restart("rental").await;
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;
    eventually("the points of one rental", || async {
        (mesh.points(&member).await == 10).then_some(())
    })
    .await;
    let card = mesh.card(&member).await.expect("card");
    assert_eq!(card.rented_items.len(), 1, "one rental, not two: {card:?}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_applying_an_event_applies_it_once_after_a_restart() {
    let mut mesh = Mesh::start().await;
    let (member, book) = mesh.member_and_book("Applied Once").await;
    // Member dies right after committing the points for ItemRented, before acknowledging.
    mesh.fault_on("member", "crash", r#"{"point": "after-apply"}"#)
        .await;
    mesh.rent(&member, &book).await.expect("rent");
    eventually("member to crash", || async {
        bookmesh::testing::connect(&format!("http://{}", mesh.member.grpc))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    mesh.restart("member").await;
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;
    assert_eq!(mesh.points(&member).await, 10, "the event applied once");
    mesh.stop().await;
}
