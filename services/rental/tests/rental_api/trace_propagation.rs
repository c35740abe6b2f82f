//! Trace context: one RentBook and the events it causes share one trace.

use std::time::Duration;

use bookmesh::proto::rental::v1::{ItemState, RentBookRequest};

use crate::helpers::start_mesh;

/// Every event of a feed, from the beginning, until `until` holds for the collected events.
async fn feed_events(
    url: &str,
    until: impl Fn(&[bookmesh::events::Event]) -> bool,
) -> Vec<bookmesh::events::Event> {
    use bookmesh::proto::events::v1::SubscribeRequest;
    use bookmesh::proto::events::v1::event_feed_service_client::EventFeedServiceClient;
    use tokio_stream::StreamExt;

    let mut client = EventFeedServiceClient::connect(url.to_owned())
        .await
        .expect("connect feed");
    let mut stream = client
        .subscribe(SubscribeRequest { after_sequence: 0 })
        .await
        .expect("subscribe")
        .into_inner();
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !until(&events) {
            let next = stream.next().await.expect("stream open").expect("event");
            events.extend(next.event);
        }
    })
    .await
    .expect("the events arrive");
    events
}

#[tokio::test]
async fn one_rental_is_one_trace_across_calls_and_events() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Traced").await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(RentBookRequest {
        member_id: member.clone(),
        book_id: book.clone(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("ascii"),
    );
    mesh.rental.rent_book(request).await.expect("rent");
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;

    let traced = |event: &bookmesh::events::Event| event.traceparent.contains(trace_id);
    let rental_events = feed_events(&mesh.rental_url, |events| {
        events
            .iter()
            .any(|e| e.event_type == "bookmesh.rental.v1.RentConfirmed")
    })
    .await;
    let book_events = feed_events(&mesh.book_url, |events| {
        events
            .iter()
            .any(|e| e.event_type == "bookmesh.book.v1.BookReserved")
    })
    .await;
    for event in rental_events.iter().chain(&book_events) {
        assert!(
            traced(event),
            "{} is not in the RentBook trace: {}",
            event.event_type,
            event.traceparent
        );
        assert_ne!(
            event.traceparent,
            format!("00-{trace_id}-00f067aa0ba902b7-01"),
            "each hop has its own span"
        );
    }
}
