//! The book service over real gRPC on loopback, on the database engine picked by
//! `BOOKMESH_TEST_DB` (SQLite unless told otherwise; MariaDB via `make test-db`).

use book_service::domain::{BookId, BookStatus as DomainStatus};
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::book::v1::{
    Book, BookStatus, GetBookRequest, ListBooksRequest, RegisterBookRequest,
};
use bookmesh::testing::{RunningServer, TestDatabase, violated_fields};
use tonic::Code;
use tonic::transport::Channel;

struct Harness {
    client: BookServiceClient<Channel>,
    db: TestDatabase,
    _server: RunningServer,
}

async fn start() -> Harness {
    let db = TestDatabase::fresh().await;
    let config = book_service::Config::for_database(&db.url);
    let server = RunningServer::start(|listener, shutdown| {
        bookmesh::service::serve_until(config, listener, shutdown)
    })
    .await;
    let client = BookServiceClient::connect(server.url())
        .await
        .expect("connect");
    Harness {
        client,
        db,
        _server: server,
    }
}

fn dune() -> RegisterBookRequest {
    RegisterBookRequest {
        title: "Dune".into(),
        author: "Frank Herbert".into(),
        isbn: "978-0-441-01359-3".into(),
        publisher: "Ace".into(),
        published_on: "1965-08-01".into(),
        classification: "Fiction".into(),
        location: "Shelf 1".into(),
    }
}

async fn register(client: &mut BookServiceClient<Channel>, request: RegisterBookRequest) -> Book {
    client
        .register_book(request)
        .await
        .expect("register")
        .into_inner()
        .book
        .expect("book in response")
}

async fn get(
    client: &mut BookServiceClient<Channel>,
    book_id: &str,
) -> Result<Book, tonic::Status> {
    client
        .get_book(GetBookRequest {
            book_id: book_id.into(),
        })
        .await
        .map(|r| r.into_inner().book.expect("book in response"))
}

async fn count_books(client: &mut BookServiceClient<Channel>) -> usize {
    client
        .list_books(ListBooksRequest {
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner()
        .books
        .len()
}

#[tokio::test]
async fn registered_book_is_available_and_normalised() {
    let mut h = start().await;
    let book = register(&mut h.client, dune()).await;
    assert_eq!(book.isbn, "9780441013593");
    assert_eq!(book.status(), BookStatus::Available);
    assert_eq!(book.published_on, "1965-08-01");
    assert_eq!(get(&mut h.client, &book.book_id).await.expect("get"), book);
}

#[tokio::test]
async fn copies_may_share_an_isbn() {
    let mut h = start().await;
    let first = register(&mut h.client, dune()).await;
    let second = register(&mut h.client, dune()).await;
    assert_ne!(first.book_id, second.book_id);
    assert_eq!(count_books(&mut h.client).await, 2);
}

#[tokio::test]
async fn invalid_registration_lists_every_field_and_stores_nothing() {
    let mut h = start().await;
    let status = h
        .client
        .register_book(RegisterBookRequest {
            title: String::new(),
            author: " ".into(),
            isbn: "978-0-441-01359-4".into(),
            publisher: "x".repeat(101),
            published_on: "01/08/1965".into(),
            classification: String::new(),
            location: String::new(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        violated_fields(&status),
        [
            "title",
            "author",
            "isbn",
            "publisher",
            "published_on",
            "classification",
            "location"
        ]
    );
    assert_eq!(count_books(&mut h.client).await, 0);

    let future = RegisterBookRequest {
        published_on: "2999-01-01".into(),
        ..dune()
    };
    let status = h
        .client
        .register_book(future)
        .await
        .expect_err("future date");
    assert_eq!(violated_fields(&status), ["published_on"]);
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let mut h = start().await;
    let missing = get(&mut h.client, &uuid::Uuid::now_v7().to_string())
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    let malformed = get(&mut h.client, "book-1").await.expect_err("malformed");
    assert_eq!(violated_fields(&malformed), ["book_id"]);
}

#[tokio::test]
async fn status_changes_are_persisted() {
    let mut h = start().await;
    let book = register(&mut h.client, dune()).await;
    let store = book_service::store::BookStore::new(
        bookmesh::db::connect_lazy(&h.db.url).await.expect("db"),
    );
    let id = BookId::parse(&book.book_id).expect("uuid");
    store
        .set_status(id, DomainStatus::Unavailable)
        .await
        .expect("set status");
    let read = get(&mut h.client, &book.book_id).await.expect("get");
    assert_eq!(read.status(), BookStatus::Unavailable);
    let unknown = BookId::generate();
    assert!(
        store
            .set_status(unknown, DomainStatus::Available)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn pages_walk_the_catalogue() {
    let mut h = start().await;
    for _ in 0..3 {
        register(&mut h.client, dune()).await;
    }
    let first = h
        .client
        .list_books(ListBooksRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(first.books.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = h
        .client
        .list_books(ListBooksRequest {
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.books.len(), 1);
    assert!(second.next_page_token.is_empty());
    assert!(second.books[0].book_id > first.books[1].book_id);
}
