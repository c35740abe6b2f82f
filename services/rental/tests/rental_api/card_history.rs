//! A card carries every book held and its history a page at a time, newest first: a
//! member's card stays one bounded message however many books they ever rented.

use bookmesh::proto::rental::v1::{GetRentalCardRequest, ItemState, ReturnBookRequest};
use bookmesh::testing::violated_fields;
use tonic::Code;

use crate::helpers::start_mesh;

#[tokio::test]
async fn history_pages_newest_first_while_held_books_are_always_there() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Read Often").await;
    // Five loans of the same copy, each through the whole saga, then one held.
    for _ in 0..5 {
        mesh.rent(&member, &book).await.expect("rent");
        mesh.wait_for_item(&member, &book, ItemState::Rented).await;
        mesh.rental
            .return_book(ReturnBookRequest {
                member_id: member.clone(),
                book_id: book.clone(),
            })
            .await
            .expect("return");
        mesh.wait_for_card_where(&member, "the return confirmed", |card| {
            card.rented_items.is_empty() && !card.returned_items.is_empty()
        })
        .await;
    }
    let held = mesh.book("Held Now").await;
    mesh.rent(&member, &held).await.expect("rent");

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let answer = mesh
            .rental
            .get_rental_card(GetRentalCardRequest {
                member_id: member.clone(),
                page_size: 2,
                page_token: token,
            })
            .await
            .expect("card page")
            .into_inner();
        let card = answer.rental_card.expect("card");
        pages += 1;
        assert_eq!(card.rented_items.len(), 1, "the held book is on every page");
        assert!(card.returned_items.len() <= 2, "{card:?}");
        seen.extend(card.returned_items.iter().map(|item| item.rented_at));
        if answer.next_page_token.is_empty() {
            break;
        }
        token = answer.next_page_token;
    }
    assert_eq!((pages, seen.len()), (3, 5), "5 returns in pages of 2");
    let mut newest_first = seen.clone();
    newest_first.sort_by_key(|at| std::cmp::Reverse(at.as_ref().map(|t| (t.seconds, t.nanos))));
    assert_eq!(seen, newest_first, "newest first, none twice");

    // A write's answer carries the books held, not the history.
    let other = mesh.book("Third").await;
    let written = mesh.rent(&member, &other).await.expect("rent");
    assert!(written.returned_items.is_empty(), "{written:?}");

    let refused = mesh
        .rental
        .get_rental_card(GetRentalCardRequest {
            member_id: member.clone(),
            page_size: 101,
            page_token: "not-a-token".into(),
        })
        .await
        .expect_err("bad page");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&refused), ["page_size", "page_token"]);
}
