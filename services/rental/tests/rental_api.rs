//! The rental service over real gRPC, with the real member and book services beside it, each
//! on its own fresh database (engine picked by `BOOKMESH_TEST_DB`).

use bookmesh::proto::book::v1::RegisterBookRequest;
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::RegisterMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::proto::rental::v1::{
    ClearOverdueRequest, GetRentalCardRequest, GetRentalHistoryRequest, ItemState,
    MarkOverdueRequest, RentBookRequest, RentalCard, RentalStatus, ReturnBookRequest,
};
use std::time::Duration;

use bookmesh::config::EventArgs;
use bookmesh::proto::book::v1::{BookStatus, GetBookRequest};
use bookmesh::proto::member::v1::GetMemberRequest;
use bookmesh::testing::{RunningServer, TestDatabase, bind, eventually, url_of, violated_fields};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

struct Mesh {
    rental: RentalServiceClient<Channel>,
    members: MemberServiceClient<Channel>,
    books: BookServiceClient<Channel>,
    book_db: TestDatabase,
    rental_db: TestDatabase,
    rental_url: String,
    book_url: String,
    events: EventArgs,
    member_server: Option<RunningServer>,
    _servers: Vec<RunningServer>,
    _dbs: Vec<TestDatabase>,
}

/// Member, book and rental services, each on its own fresh database, wired as in production:
/// rental calls member and book; book and member consume rental's events, rental consumes
/// book's. Listeners are bound first so every service knows the others' addresses.
async fn start_mesh() -> Mesh {
    let member_db = TestDatabase::fresh().await;
    let book_db = TestDatabase::fresh().await;
    let rental_db = TestDatabase::fresh().await;
    let (member_listener, book_listener, rental_listener) =
        (bind().await, bind().await, bind().await);
    let (member_url, book_url, rental_url) = (
        url_of(&member_listener),
        url_of(&book_listener),
        url_of(&rental_listener),
    );
    // One event namespace per mesh, so tests on JetStream never share streams.
    let events = EventArgs::for_tests(&format!("t{}", uuid::Uuid::now_v7().simple()));
    let mut member_config = member_service::Config::for_tests(&member_db.url, &rental_url);
    member_config.service.events = events.clone();
    let member_server = RunningServer::start_on(member_listener, |listener, shutdown| {
        bookmesh::service::serve_until(member_config, listener, shutdown)
    })
    .await;
    let mut book_config = book_service::Config::for_tests(&book_db.url, &rental_url);
    book_config.service.events = events.clone();
    let book_server = RunningServer::start_on(book_listener, |listener, shutdown| {
        bookmesh::service::serve_until(book_config, listener, shutdown)
    })
    .await;
    let mut rental_config =
        rental_service::Config::for_tests(&rental_db.url, &member_url, &book_url);
    rental_config.service.events = events.clone();
    let rental_server = RunningServer::start_on(rental_listener, |listener, shutdown| {
        bookmesh::service::serve_until(rental_config, listener, shutdown)
    })
    .await;
    Mesh {
        rental: RentalServiceClient::connect(rental_url.clone())
            .await
            .expect("connect rental"),
        rental_url,
        events,
        members: MemberServiceClient::connect(member_url)
            .await
            .expect("connect member"),
        books: BookServiceClient::connect(book_url.clone())
            .await
            .expect("connect book"),
        book_url,
        book_db,
        rental_db,
        member_server: Some(member_server),
        _servers: vec![book_server, rental_server],
        _dbs: vec![member_db],
    }
}

impl Mesh {
    async fn member(&mut self) -> String {
        let email = format!("{}@example.org", uuid::Uuid::now_v7().simple());
        self.members
            .register_member(RegisterMemberRequest {
                name: "Ada".into(),
                email,
            })
            .await
            .expect("register member")
            .into_inner()
            .member
            .expect("member")
            .member_id
    }

    async fn book(&mut self, title: &str) -> String {
        self.books
            .register_book(RegisterBookRequest {
                title: title.into(),
                author: "Frank Herbert".into(),
                isbn: "9780441013593".into(),
                publisher: "Ace".into(),
                published_on: "1965-08-01".into(),
                classification: "Fiction".into(),
                location: "Shelf 1".into(),
            })
            .await
            .expect("register book")
            .into_inner()
            .book
            .expect("book")
            .book_id
    }

    async fn rent(&mut self, member_id: &str, book_id: &str) -> Result<RentalCard, Status> {
        self.rental
            .rent_book(RentBookRequest {
                member_id: member_id.into(),
                book_id: book_id.into(),
            })
            .await
            .map(|r| r.into_inner().rental_card.expect("card"))
    }

    /// Waits until an item of the member's card for `book_id` satisfies `wanted`; returns the card.
    async fn wait_for_card(
        &self,
        member_id: &str,
        book_id: &str,
        what: &str,
        wanted: impl Fn(ItemState) -> bool + Copy,
    ) -> RentalCard {
        let rental = self.rental.clone();
        eventually(what, Duration::from_secs(20), || {
            let mut rental = rental.clone();
            async move {
                let card = rental
                    .get_rental_card(GetRentalCardRequest {
                        member_id: member_id.into(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .rental_card?;
                let found = card
                    .rented_items
                    .iter()
                    .chain(&card.returned_items)
                    .chain(&card.canceled_items)
                    .any(|item| item.book_id == book_id && wanted(item.state()));
                found.then_some(card)
            }
        })
        .await
    }

    /// Waits until the saga settled the item for `book_id` in `state`.
    async fn wait_for_item(&self, member_id: &str, book_id: &str, state: ItemState) -> RentalCard {
        let what = format!("{book_id} {state:?}");
        self.wait_for_card(member_id, book_id, &what, |s| s == state)
            .await
    }

    /// Waits until the item for `book_id` left PENDING (RENTED or CANCELED).
    async fn wait_for_item_settled(&self, member_id: &str, book_id: &str) -> RentalCard {
        self.wait_for_card(member_id, book_id, "item settled", |s| {
            matches!(s, ItemState::Rented | ItemState::Canceled)
        })
        .await
    }

    /// Waits until the member has `points`.
    async fn wait_for_points(&self, member_id: &str, points: i64) {
        let members = self.members.clone();
        eventually(&format!("{points} points"), Duration::from_secs(20), || {
            let mut members = members.clone();
            async move {
                let member = members
                    .get_member(GetMemberRequest {
                        member_id: member_id.into(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .member?;
                (member.points == points).then_some(())
            }
        })
        .await
    }

    /// Waits until the book has `status`.
    async fn wait_for_book(&self, book_id: &str, status: BookStatus) {
        let books = self.books.clone();
        eventually(&format!("book {status:?}"), Duration::from_secs(20), || {
            let mut books = books.clone();
            async move {
                let book = books
                    .get_book(GetBookRequest {
                        book_id: book_id.into(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .book?;
                (book.status() == status).then_some(())
            }
        })
        .await
    }

    /// A best-seller replica on its own fresh database, projecting the rental feed.
    async fn start_bestbook(&mut self) -> RunningServer {
        let db = TestDatabase::fresh().await;
        let mut config = bestbook_service::Config::for_tests(&db.url, &self.rental_url);
        config.service.events = self.events.clone();
        let server = RunningServer::start(|listener, shutdown| {
            bookmesh::service::serve_until(config, listener, shutdown)
        })
        .await;
        self._dbs.push(db);
        server
    }

    async fn card(&mut self, member_id: &str) -> Result<RentalCard, Status> {
        self.rental
            .get_rental_card(GetRentalCardRequest {
                member_id: member_id.into(),
            })
            .await
            .map(|r| r.into_inner().rental_card.expect("card"))
    }
}

fn precondition_type(status: &Status) -> String {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    status
        .get_details_precondition_failure()
        .expect("PreconditionFailure details")
        .violations
        .first()
        .expect("one violation")
        .r#type
        .clone()
}

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
    assert_eq!((card.late_fee, card.status()), (0, RentalStatus::Available));
    // The clear-overdue saga: the member service deducts the fee's points.
    mesh.wait_for_points(&member, 10).await;
    mesh.rent(&member, &other_book)
        .await
        .expect("renting again");
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
    assert_eq!(cleared.status(), RentalStatus::Available);
    // The member service rejects the deduction; the rental service restores the fee.
    let rental = mesh.rental.clone();
    eventually("fee restored", Duration::from_secs(20), || {
        let mut rental = rental.clone();
        let member_id = member.clone();
        async move {
            let card = rental
                .get_rental_card(GetRentalCardRequest { member_id })
                .await
                .ok()?
                .into_inner()
                .rental_card?;
            (card.late_fee == 300 && card.status() == RentalStatus::Unavailable).then_some(())
        }
    })
    .await;
    mesh.wait_for_points(&member, 20).await;
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
    // While the book service has not confirmed the return, a repeat is refused as in progress.
    if let Err(status) = mesh.rental.return_book(request.clone()).await {
        assert!(
            matches!(status.code(), Code::FailedPrecondition | Code::NotFound),
            "{status:?}"
        );
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

#[tokio::test]
async fn malformed_requests_are_invalid_arguments() {
    let mut mesh = start_mesh().await;
    let status = mesh.rent("nope", "").await.expect_err("invalid");
    assert_eq!(violated_fields(&status), ["member_id", "book_id"]);
    let status = mesh
        .rental
        .clear_overdue(ClearOverdueRequest {
            member_id: "x".into(),
            points: -5,
        })
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&status), ["member_id", "points"]);
}

#[tokio::test]
async fn a_dead_member_service_makes_rents_unavailable_and_changes_nothing() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Dune").await;
    mesh.member_server
        .take()
        .expect("member server")
        .stop()
        .await;
    let status = mesh
        .rent(&member, &book)
        .await
        .expect_err("member service down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        mesh.card(&member).await.expect_err("no card").code(),
        Code::NotFound
    );
}
