//! Compensation: a saga step that fails is undone (a rent lost to a race, a fee the member
//! cannot pay).

use std::time::Duration;

use bookmesh::proto::book::v1::BookStatus;
use bookmesh::proto::rental::v1::{
    ClearOverdueRequest, GetRentalCardRequest, GetRentalHistoryRequest, ItemState, RentBookRequest,
    RentalStatus, ReturnBookRequest,
};
use bookmesh::testing::eventually;

use crate::helpers::start_mesh;

#[tokio::test]
async fn two_members_racing_for_one_book_end_with_one_rental_and_one_compensated() {
    let mut mesh = start_mesh().await;
    for _round in 0..10 {
        let (first, second) = (mesh.member().await, mesh.member().await);
        let book = mesh.book("Contested").await;
        let (mut client_a, mut client_b) = (mesh.rental.clone(), mesh.rental.clone());
        let (a, b) = tokio::join!(
            client_a.rent_book(RentBookRequest {
                member_id: first.clone(),
                book_id: book.clone(),
            }),
            client_b.rent_book(RentBookRequest {
                member_id: second.clone(),
                book_id: book.clone(),
            }),
        );
        // Both passed the availability check; the saga decides who gets the copy.
        let accepted: Vec<&str> = [(&a, &first), (&b, &second)]
            .into_iter()
            .filter(|(result, _)| result.is_ok())
            .map(|(_, member)| member.as_str())
            .collect();
        let mut rented = 0;
        for member in &accepted {
            let card = mesh.wait_for_item_settled(member, &book).await;
            let item = card
                .rented_items
                .iter()
                .chain(&card.canceled_items)
                .find(|item| item.book_id == book)
                .expect("item on the card");
            match item.state() {
                ItemState::Rented => {
                    rented += 1;
                    mesh.wait_for_points(member, 10).await;
                }
                ItemState::Canceled => {
                    assert_eq!(item.cancel_reason, "book is not available");
                    // Awarded on ItemRented, taken back on RentCanceled.
                    mesh.wait_for_points(member, 0).await;
                }
                other => panic!("unexpected {other:?}"),
            }
            // The saga's timeline, step by step.
            let history = mesh
                .rental
                .get_rental_history(GetRentalHistoryRequest {
                    member_id: member.to_string(),
                })
                .await
                .expect("history")
                .into_inner();
            let saga = history
                .sagas
                .iter()
                .find(|saga| saga.book_id == book)
                .expect("saga of the item");
            let steps: Vec<&str> = saga
                .steps
                .iter()
                .map(|step| step.event_type.as_str())
                .collect();
            match item.state() {
                ItemState::Rented => assert_eq!(
                    steps,
                    [
                        "bookmesh.rental.v1.ItemRented",
                        "bookmesh.book.v1.BookReserved",
                        "bookmesh.rental.v1.RentConfirmed"
                    ]
                ),
                _ => {
                    assert_eq!(
                        steps,
                        [
                            "bookmesh.rental.v1.ItemRented",
                            "bookmesh.book.v1.BookReservationRejected",
                            "bookmesh.rental.v1.RentCanceled"
                        ]
                    );
                    assert_eq!(saga.steps[1].detail, "book is not available");
                    assert_eq!(saga.steps[1].producer, "book");
                    assert!(saga.steps.iter().all(|step| !step.event_id.is_empty()));
                }
            }
        }
        assert_eq!(rented, 1, "exactly one member gets the copy");
        mesh.wait_for_book(&book, BookStatus::Unavailable).await;
    }
}

#[tokio::test]
async fn a_fee_the_member_cannot_pay_is_restored() {
    use rental_service::store::entity::item;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Very late").await;
    mesh.rent(&member, &book).await.expect("rent");
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;
    // Thirty days late: 300 points of fee, far more than the 20 the member will have.
    let rental_db = bookmesh::db::connect_lazy(&mesh.rental_db.url)
        .await
        .expect("rental db");
    item::Entity::update_many()
        .col_expr(
            item::Column::DueAt,
            sea_orm::sea_query::Expr::value(bookmesh::db::now() - chrono::Duration::days(30)),
        )
        .filter(item::Column::BookId.eq(book.clone()))
        .exec(&rental_db)
        .await
        .expect("backdate the loan");
    mesh.rental
        .return_book(ReturnBookRequest {
            member_id: member.clone(),
            book_id: book.clone(),
        })
        .await
        .expect("return");
    mesh.wait_for_item(&member, &book, ItemState::Returned)
        .await;
    mesh.wait_for_points(&member, 20).await;
    let fee = mesh.card(&member).await.expect("card").late_fee;
    assert_eq!(fee, 300);

    let cleared = mesh
        .rental
        .clear_overdue(ClearOverdueRequest {
            member_id: member.clone(),
            points: fee,
        })
        .await
        .expect("clear")
        .into_inner()
        .rental_card
        .expect("card");
    // Not free while the deduction is unconfirmed: a member who cannot pay cannot slip a
    // rental in before the compensation lands.
    assert_eq!(
        (cleared.status(), cleared.late_fee_in_payment),
        (RentalStatus::Unavailable, 300)
    );
    let meanwhile = mesh.book("Meanwhile").await;
    let refused = mesh
        .rent(&member, &meanwhile)
        .await
        .expect_err("the card is not free");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    // The member service rejects the deduction; the rental service restores the fee.
    let rental = mesh.rental.clone();
    eventually("fee restored", Duration::from_secs(20), || {
        let mut rental = rental.clone();
        let member_id = member.clone();
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
            (card.late_fee == 300
                && card.late_fee_in_payment == 0
                && card.status() == RentalStatus::Unavailable)
                .then_some(())
        }
    })
    .await;
    mesh.wait_for_points(&member, 20).await;
}
