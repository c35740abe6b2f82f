//! Renting: the card, the saga that confirms a rent, and the rules that refuse one.

use bookmesh::proto::book::v1::BookStatus;
use bookmesh::proto::rental::v1::{ItemState, RentBookRequest, RentalStatus};
use tonic::Code;

use crate::helpers::{precondition_type, start_mesh};

#[tokio::test]
async fn renting_puts_a_pending_item_on_a_new_card() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Dune").await;
    assert_eq!(
        mesh.card(&member).await.expect_err("no card yet").code(),
        Code::NotFound
    );

    let card = mesh.rent(&member, &book).await.expect("rent");
    assert_eq!(card.member_id, member);
    assert_eq!(card.status(), RentalStatus::Available);
    assert_eq!(card.rented_items.len(), 1);
    let item = &card.rented_items[0];
    assert_eq!(
        (item.book_id.as_str(), item.title.as_str()),
        (book.as_str(), "Dune")
    );
    assert_eq!(item.state(), ItemState::Pending);
    let rented = item.rented_at.expect("rented_at").seconds;
    let due = item.due_at.expect("due_at").seconds;
    assert_eq!(due - rented, 14 * 24 * 3600);

    // The saga: the book service reserves the book, the item becomes RENTED, the member
    // earns 10 points.
    mesh.wait_for_item(&member, &book, ItemState::Rented).await;
    mesh.wait_for_book(&book, BookStatus::Unavailable).await;
    mesh.wait_for_points(&member, 10).await;
}

#[tokio::test]
async fn unknown_member_or_book_is_not_found_and_creates_no_card() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Dune").await;
    let stranger = uuid::Uuid::now_v7().to_string();

    let no_member = mesh
        .rent(&stranger, &book)
        .await
        .expect_err("unknown member");
    assert_eq!(no_member.code(), Code::NotFound);
    assert!(no_member.message().contains("member"), "{no_member:?}");
    let no_book = mesh
        .rent(&member, &stranger)
        .await
        .expect_err("unknown book");
    assert_eq!(no_book.code(), Code::NotFound);
    assert!(no_book.message().contains("book"), "{no_book:?}");
    assert_eq!(
        mesh.card(&member).await.expect_err("no card").code(),
        Code::NotFound
    );
    assert_eq!(
        mesh.card(&stranger).await.expect_err("no card").code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn an_unavailable_book_cannot_be_rented() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Dune").await;
    // The rental saga (events) will do this on BookReserved; here the book's own store does.
    let store = book_service::store::BookStore::new(
        bookmesh::db::connect_lazy(&mesh.book_db.url)
            .await
            .expect("book db"),
    );
    store
        .set_status(
            book_service::domain::BookId::parse(&book).expect("uuid"),
            book_service::domain::BookStatus::Unavailable,
        )
        .await
        .expect("set status");
    let status = mesh.rent(&member, &book).await.expect_err("unavailable");
    assert_eq!(precondition_type(&status), "BOOK_UNAVAILABLE");
    assert_eq!(
        mesh.card(&member).await.expect_err("no card").code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn at_most_five_books_and_never_the_same_one_twice() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let mut books = Vec::new();
    for i in 0..6 {
        books.push(mesh.book(&format!("Book {i}")).await);
    }
    for book in &books[..5] {
        mesh.rent(&member, book).await.expect("rent");
    }
    let again = mesh.rent(&member, &books[0]).await.expect_err("same book");
    assert_eq!(again.code(), Code::AlreadyExists);
    let sixth = mesh.rent(&member, &books[5]).await.expect_err("sixth book");
    assert_eq!(precondition_type(&sixth), "TOO_MANY_BOOKS");
    assert_eq!(
        mesh.card(&member).await.expect("card").rented_items.len(),
        5
    );
}

#[tokio::test]
async fn concurrent_rents_on_one_card_never_exceed_five() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let mut books = Vec::new();
    for i in 0..8 {
        books.push(mesh.book(&format!("Book {i}")).await);
    }
    let attempts = books.iter().map(|book| {
        let mut client = mesh.rental.clone();
        let request = RentBookRequest {
            member_id: member.clone(),
            book_id: book.clone(),
        };
        async move { client.rent_book(request).await }
    });
    let results = futures::future::join_all(attempts).await;
    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(succeeded, 5, "{results:?}");
    for failure in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(precondition_type(failure), "TOO_MANY_BOOKS");
    }
    assert_eq!(
        mesh.card(&member).await.expect("card").rented_items.len(),
        5
    );
}

/// The writer metrics' count of calls' write transactions so far (every service of this
/// process shares one registry, so the count only grows, whatever other tests run beside).
fn write_transactions(metric: &str) -> f64 {
    bookmesh::metrics::render()
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(&format!("{metric}_count{{writer=\"call\"}} "))?;
            value.parse().ok()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_rent_on_sqlite_waits_for_and_holds_the_writer_turn_on_the_metrics() {
    if bookmesh::testing::Engine::from_env() != bookmesh::testing::Engine::Sqlite {
        // PostgreSQL and MariaDB have no writer turn: their writers run side by side.
        return;
    }
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Solaris").await;
    let (held, waited) = (
        write_transactions("bookmesh_db_write_turn_held_seconds"),
        write_transactions("bookmesh_db_write_turn_wait_seconds"),
    );
    mesh.rent(&member, &book).await.expect("rent");
    assert!(write_transactions("bookmesh_db_write_turn_held_seconds") >= held + 1.0);
    assert!(write_transactions("bookmesh_db_write_turn_wait_seconds") >= waited + 1.0);
}
