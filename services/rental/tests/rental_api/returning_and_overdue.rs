//! Returning books, overdue loans, the late fee and clearing it.

use std::time::Duration;

use bookmesh::proto::book::v1::BookStatus;
use bookmesh::proto::rental::v1::{
    ClearOverdueRequest, GetRentalCardRequest, ItemState, MarkOverdueRequest, RentalStatus,
    ReturnBookRequest,
};
use bookmesh::testing::eventually;
use tonic::Code;

use crate::helpers::{precondition_type, start_mesh};

#[tokio::test]
async fn overdue_late_fee_and_clearing() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let late_book = mesh.book("Late").await;
    let other_book = mesh.book("Other").await;
    mesh.rent(&member, &late_book).await.expect("rent");
    mesh.wait_for_item(&member, &late_book, ItemState::Rented)
        .await;

    let card = mesh
        .rental
        .mark_overdue(MarkOverdueRequest {
            member_id: member.clone(),
            book_id: late_book.clone(),
        })
        .await
        .expect("mark overdue")
        .into_inner()
        .rental_card
        .expect("card");
    assert_eq!(card.status(), RentalStatus::Unavailable);
    assert!(card.rented_items[0].overdue);

    let blocked = mesh
        .rent(&member, &other_book)
        .await
        .expect_err("card unavailable");
    assert_eq!(precondition_type(&blocked), "CARD_UNAVAILABLE");

    let nothing_returned = mesh
        .rental
        .clear_overdue(ClearOverdueRequest {
            member_id: member.clone(),
            points: 10,
        })
        .await
        .expect_err("book still out");
    assert_eq!(precondition_type(&nothing_returned), "BOOKS_OUTSTANDING");

    let card = mesh
        .rental
        .return_book(ReturnBookRequest {
            member_id: member.clone(),
            book_id: late_book.clone(),
        })
        .await
        .expect("return")
        .into_inner()
        .rental_card
        .expect("card");
    assert_eq!(card.late_fee, 10);
    assert_eq!(card.status(), RentalStatus::Unavailable);
    assert_eq!(card.rented_items[0].state(), ItemState::ReturnPending);

    // The return saga: the book service takes the copy back, the item is RETURNED, the member
    // earned points for the rental and for the return.
    let card = mesh
        .wait_for_item(&member, &late_book, ItemState::Returned)
        .await;
    assert!(card.rented_items.is_empty());
    assert_eq!(card.returned_items[0].late_fee, 10);
    assert!(card.returned_items[0].returned_at.is_some());
    mesh.wait_for_book(&late_book, BookStatus::Available).await;
    mesh.wait_for_points(&member, 20).await;

    let wrong = mesh
        .rental
        .clear_overdue(ClearOverdueRequest {
            member_id: member.clone(),
            points: 5,
        })
        .await
        .expect_err("wrong amount");
    assert_eq!(precondition_type(&wrong), "WRONG_AMOUNT");
    assert_eq!(mesh.card(&member).await.expect("card").late_fee, 10);

    let card = mesh
        .rental
        .clear_overdue(ClearOverdueRequest {
            member_id: member.clone(),
            points: 10,
        })
        .await
        .expect("clear")
        .into_inner()
        .rental_card
        .expect("card");
    // Until the member service confirms the deduction, the card is not free.
    assert_eq!(
        (card.late_fee, card.late_fee_in_payment, card.status()),
        (0, 10, RentalStatus::Unavailable)
    );
    // The clear-overdue saga: the member service deducts the fee's points, and its
    // confirmation frees the card.
    mesh.wait_for_points(&member, 10).await;
    let rental = mesh.rental.clone();
    let member_id = member.clone();
    eventually("payment confirmed", Duration::from_secs(20), || {
        let mut rental = rental.clone();
        let member_id = member_id.clone();
        async move {
            let card = rental
                .get_rental_card(GetRentalCardRequest {
                    member_id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .rental_card?;
            (card.late_fee_in_payment == 0 && card.status() == RentalStatus::Available)
                .then_some(())
        }
    })
    .await;
    mesh.rent(&member, &other_book)
        .await
        .expect("renting again");
}

#[tokio::test]
async fn returning_a_book_not_on_the_card_is_not_found() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Dune").await;
    let no_card = mesh
        .rental
        .return_book(ReturnBookRequest {
            member_id: member.clone(),
            book_id: book.clone(),
        })
        .await
        .expect_err("no card");
    assert_eq!(no_card.code(), Code::NotFound);
    mesh.rent(&member, &book).await.expect("rent");
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;
    let request = ReturnBookRequest {
        member_id: member.clone(),
        book_id: book.clone(),
    };
    mesh.rental
        .return_book(request.clone())
        .await
        .expect("return");
    // A repeat (a client retrying after a lost answer): while the return is pending it gets
    // the card as the first call left it; once confirmed, the book is no longer on the card.
    match mesh.rental.return_book(request.clone()).await {
        Ok(repeated) => {
            let card = repeated.into_inner().rental_card.expect("card");
            let items: Vec<_> = card
                .rented_items
                .iter()
                .chain(&card.returned_items)
                .filter(|item| item.book_id == book)
                .collect();
            assert_eq!(items.len(), 1, "one item for the book, not two: {card:?}");
        }
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
    }
    mesh.wait_for_item(&member, &book, ItemState::Returned)
        .await;
    let twice = mesh
        .rental
        .return_book(request)
        .await
        .expect_err("returned twice");
    assert_eq!(twice.code(), Code::NotFound);
    assert_eq!(
        mesh.card(&member).await.expect("card").returned_items.len(),
        1
    );
}
