//! Idempotency keys: a write retried with the same `idempotency-key` returns the first answer
//! and changes nothing more, on every service that takes writes.

use bookmesh::proto::book::v1::{ListBooksRequest, RegisterBookRequest};
use bookmesh::proto::member::v1::{ListMembersRequest, RegisterMemberRequest};
use bookmesh::proto::rental::v1::{ItemState, RentBookRequest, ReturnBookRequest};
use tonic::{Code, Request};

use crate::helpers::start_mesh;

fn keyed<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().expect("ascii"));
    request
}

#[tokio::test]
async fn a_retried_registration_registers_once() {
    let mut mesh = start_mesh().await;
    let book = bookmesh::testing::a_book("Keyed");
    let first = mesh
        .books
        .register_book(keyed(book.clone(), "book-1"))
        .await
        .expect("first")
        .into_inner();
    let again = mesh
        .books
        .register_book(keyed(book.clone(), "book-1"))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(first, again, "the first answer, again");
    let books = mesh
        .books
        .list_books(ListBooksRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .books;
    assert_eq!(
        books.iter().filter(|b| b.title == "Keyed").count(),
        1,
        "one copy, not two"
    );
    // Without a key a registration is a new copy, as before.
    mesh.books.register_book(book.clone()).await.expect("copy");
    // The same key for another request is refused, and registers nothing.
    let other = RegisterBookRequest {
        title: "Another".into(),
        ..book
    };
    let refused = mesh
        .books
        .register_book(keyed(other, "book-1"))
        .await
        .expect_err("key reused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    let member = RegisterMemberRequest {
        name: "Keyed Member".into(),
        email: format!("{}@example.org", uuid::Uuid::now_v7().simple()),
    };
    let first = mesh
        .members
        .register_member(keyed(member.clone(), "member-1"))
        .await
        .expect("first")
        .into_inner();
    let again = mesh
        .members
        .register_member(keyed(member.clone(), "member-1"))
        .await
        .expect("a repeat is not ALREADY_EXISTS")
        .into_inner();
    assert_eq!(first, again);
    let members = mesh
        .members
        .list_members(ListMembersRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .members;
    assert_eq!(
        members.iter().filter(|m| m.email == member.email).count(),
        1
    );
    let invalid = mesh
        .members
        .register_member(keyed(member, &"k".repeat(201)))
        .await
        .expect_err("key too long");
    assert_eq!(invalid.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_retried_rent_and_return_answer_as_the_first_did() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Dune").await;
    let rent = RentBookRequest {
        member_id: member.clone(),
        book_id: book.clone(),
    };
    let first = mesh
        .rental
        .rent_book(keyed(rent.clone(), "rent-1"))
        .await
        .expect("rent")
        .into_inner();
    let again = mesh
        .rental
        .rent_book(keyed(rent.clone(), "rent-1"))
        .await
        .expect("a keyed repeat is answered as the first")
        .into_inner();
    assert_eq!(first, again);
    // Without the key the repeat meets the rules: the book is on the card already.
    let unkeyed = mesh
        .rental
        .rent_book(rent)
        .await
        .expect_err("already on the card");
    assert_eq!(unkeyed.code(), Code::AlreadyExists);
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;

    let give_back = ReturnBookRequest {
        member_id: member.clone(),
        book_id: book.clone(),
    };
    let first = mesh
        .rental
        .return_book(keyed(give_back.clone(), "return-1"))
        .await
        .expect("return")
        .into_inner();
    mesh.wait_for_item(&member, &book, ItemState::Returned)
        .await;
    // Once returned, an unkeyed repeat is NOT_FOUND; a keyed one gets the first answer.
    let again = mesh
        .rental
        .return_book(keyed(give_back.clone(), "return-1"))
        .await
        .expect("keyed repeat")
        .into_inner();
    assert_eq!(first, again);
    let unkeyed = mesh
        .rental
        .return_book(give_back)
        .await
        .expect_err("not on the card any more");
    assert_eq!(unkeyed.code(), Code::NotFound);
    let card = mesh.card(&member).await.expect("card");
    assert_eq!(card.returned_items.len(), 1, "returned once");
}
