//! The best-seller read model, projected from the rental feed.

use std::time::Duration;

use bookmesh::proto::book::v1::BookStatus;
use bookmesh::proto::rental::v1::{ItemState, ReturnBookRequest};
use bookmesh::testing::eventually;

use crate::helpers::start_mesh;

#[tokio::test]
async fn the_best_seller_ranking_counts_confirmed_rentals_and_rebuilds_from_the_feed() {
    use bookmesh::proto::bestbook::v1::GetBestBooksRequest;
    use bookmesh::proto::bestbook::v1::best_book_service_client::BestBookServiceClient;

    let mut mesh = start_mesh().await;
    let popular = mesh.book("Popular").await;
    let other = mesh.book("Other").await;
    // Popular: rented and returned twice; Other: once; a canceled rental must not count.
    for _ in 0..2 {
        let member = mesh.member().await;
        mesh.rent(&member, &popular).await.expect("rent");
        mesh.wait_for_item(&member, &popular, ItemState::Rented)
            .await;
        mesh.rental
            .return_book(ReturnBookRequest {
                member_id: member.clone(),
                book_id: popular.clone(),
            })
            .await
            .expect("return");
        mesh.wait_for_item(&member, &popular, ItemState::Returned)
            .await;
        mesh.wait_for_book(&popular, BookStatus::Available).await;
    }
    let member = mesh.member().await;
    mesh.rent(&member, &other).await.expect("rent");
    mesh.wait_for_item(&member, &other, ItemState::Rented).await;

    let ranking = |url: String| async move {
        eventually("ranking", Duration::from_secs(20), || {
            let url = url.clone();
            async move {
                let mut client = BestBookServiceClient::connect(url).await.ok()?;
                let books = client
                    .get_best_books(GetBestBooksRequest { limit: 10 })
                    .await
                    .ok()?
                    .into_inner()
                    .books;
                let ranking: Vec<(String, i64, i32)> = books
                    .into_iter()
                    .map(|b| (b.title, b.rentals, b.rank))
                    .collect();
                (ranking == [("Popular".into(), 2, 1), ("Other".into(), 1, 2)]).then_some(())
            }
        })
        .await
    };
    let bestbook = mesh.start_bestbook().await;
    ranking(bestbook.url()).await;

    // A read model is disposable: a fresh replica on an empty database replays the feed. (On
    // JetStream replicas share one durable consumer instead: they divide the work.)
    if mesh.events.event_transport != bookmesh::config::EventTransport::Nats {
        let fresh = mesh.start_bestbook().await;
        ranking(fresh.url()).await;
    }
}
