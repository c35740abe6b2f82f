//! Faults in event delivery: a poison event, a duplicate delivery, a slow delivery.

use std::time::Duration;

use bookmesh::proto::events::v1::dead_letter_service_client::DeadLetterServiceClient;
use bookmesh::proto::events::v1::{DeadLetter, ListDeadLettersRequest, RedriveDeadLetterRequest};
use bookmesh::proto::rental::v1::ItemState;

use crate::helpers::{Mesh, eventually};

async fn dead_letters(mesh: &Mesh) -> Vec<DeadLetter> {
    DeadLetterServiceClient::new(
        bookmesh::testing::connect(&format!("http://{}", mesh.book.grpc))
            .await
            .expect("connect"),
    )
    .list_dead_letters(ListDeadLettersRequest::default())
    .await
    .expect("list dead letters")
    .into_inner()
    .dead_letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_once_and_a_redrive_after_the_fault_completes_the_saga() {
    let mesh = Mesh::start().await;
    let (member, book) = mesh.member_and_book("Poisoned").await;
    mesh.fault_on(
        "book",
        "poison-event",
        r#"{"event_type": "bookmesh.rental.v1.ItemRented"}"#,
    )
    .await;
    mesh.rent(&member, &book).await.expect("rent");
    let letters = eventually("the dead letter", || async {
        let letters = dead_letters(&mesh).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1, "exactly one dead letter: {letters:?}");
    assert!(letters[0].error.contains("poison event"), "{letters:?}");
    mesh.wait_for_item(&member, &book, ItemState::Pending).await;

    // The fault cleared, a redrive applies the event: the saga goes on to RENTED.
    mesh.fault_off("book", "poison-event").await;
    let redriven = DeadLetterServiceClient::new(
        bookmesh::testing::connect(&format!("http://{}", mesh.book.grpc))
            .await
            .expect("connect"),
    )
    .redrive_dead_letter(RedriveDeadLetterRequest {
        dead_letter_id: letters[0].dead_letter_id,
    })
    .await
    .expect("redrive")
    .into_inner();
    assert!(redriven.error.is_empty(), "{redriven:?}");
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;
    assert!(dead_letters(&mesh).await.is_empty());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_changes_nothing() {
    let mesh = Mesh::start().await;
    let (member, book) = mesh.member_and_book("Twice Told").await;
    mesh.fault_on("member", "duplicate-delivery", "").await;
    mesh.rent(&member, &book).await.expect("rent");
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;
    let duplicates =
        r#"bookmesh_consumer_events_total{outcome="duplicate",subscription="member:rental"}"#;
    eventually("the second delivery", || async {
        (mesh.metric("member", duplicates).await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(mesh.points(&member).await, 10, "awarded once, not twice");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_delivery_holds_the_saga_for_the_delay_then_it_completes() {
    let mesh = Mesh::start().await;
    let (member, book) = mesh.member_and_book("Slow Post").await;
    mesh.fault_on("book", "event-delay", r#"{"delay_ms": 3000}"#)
        .await;
    mesh.rent(&member, &book).await.expect("rent");
    // Well inside the delay the copy is not reserved yet...
    tokio::time::sleep(Duration::from_millis(1000)).await;
    mesh.wait_for_item(&member, &book, ItemState::Pending).await;
    // ...and after it the saga completes.
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;
    mesh.stop().await;
}
