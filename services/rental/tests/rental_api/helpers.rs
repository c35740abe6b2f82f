//! The mesh every rental test runs against, and the waits on it.

use std::time::Duration;

use bookmesh::config::EventArgs;
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::book::v1::{BookStatus, GetBookRequest};
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::member::v1::{GetMemberRequest, RegisterMemberRequest};
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::proto::rental::v1::{GetRentalCardRequest, ItemState, RentBookRequest, RentalCard};
use bookmesh::testing::{RunningServer, TestDatabase, bind, eventually, url_of};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Clients of the three services, and what tests reach into: the databases, the feeds' URLs,
/// the event settings and the member server (to stop it).
pub struct Mesh {
    pub rental: RentalServiceClient<Channel>,
    pub members: MemberServiceClient<Channel>,
    pub books: BookServiceClient<Channel>,
    pub book_db: TestDatabase,
    pub rental_db: TestDatabase,
    pub rental_url: String,
    pub book_url: String,
    pub events: EventArgs,
    pub member_server: Option<RunningServer>,
    _servers: Vec<RunningServer>,
    _dbs: Vec<TestDatabase>,
}

/// Member, book and rental services, each on its own fresh database, wired as in production:
/// rental calls member and book; book and member consume rental's events, rental consumes
/// book's. Listeners are bound first so every service knows the others' addresses.
pub async fn start_mesh() -> Mesh {
    start_mesh_with(|_| {}).await
}

/// [`start_mesh`] with the rental service's configuration changed by `tweak`.
pub async fn start_mesh_with(tweak: impl FnOnce(&mut rental_service::Config)) -> Mesh {
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
    tweak(&mut rental_config);
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
    pub async fn member(&mut self) -> String {
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

    pub async fn book(&mut self, title: &str) -> String {
        self.books
            .register_book(bookmesh::testing::a_book(title))
            .await
            .expect("register book")
            .into_inner()
            .book
            .expect("book")
            .book_id
    }

    pub async fn rent(&mut self, member_id: &str, book_id: &str) -> Result<RentalCard, Status> {
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
        self.wait_for_card_where(member_id, what, |card| {
            card.rented_items
                .iter()
                .chain(&card.returned_items)
                .chain(&card.canceled_items)
                .any(|item| item.book_id == book_id && wanted(item.state()))
        })
        .await
    }

    /// Waits until the member's card (its first page) satisfies `wanted`.
    pub async fn wait_for_card_where(
        &self,
        member_id: &str,
        what: &str,
        wanted: impl Fn(&RentalCard) -> bool + Copy,
    ) -> RentalCard {
        let rental = self.rental.clone();
        eventually(what, Duration::from_secs(20), || {
            let mut rental = rental.clone();
            async move {
                let card = rental
                    .get_rental_card(GetRentalCardRequest {
                        member_id: member_id.into(),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .rental_card?;
                wanted(&card).then_some(card)
            }
        })
        .await
    }

    /// Waits until the saga settled the item for `book_id` in `state`.
    pub async fn wait_for_item(
        &self,
        member_id: &str,
        book_id: &str,
        state: ItemState,
    ) -> RentalCard {
        let what = format!("{book_id} {state:?}");
        self.wait_for_card(member_id, book_id, &what, |s| s == state)
            .await
    }

    /// Waits until the item for `book_id` left PENDING (RENTED or CANCELED).
    pub async fn wait_for_item_settled(&self, member_id: &str, book_id: &str) -> RentalCard {
        self.wait_for_card(member_id, book_id, "item settled", |s| {
            matches!(s, ItemState::Rented | ItemState::Canceled)
        })
        .await
    }

    /// Waits until the member has `points`.
    pub async fn wait_for_points(&self, member_id: &str, points: i64) {
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
    pub async fn wait_for_book(&self, book_id: &str, status: BookStatus) {
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
    pub async fn start_bestbook(&mut self) -> RunningServer {
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

    pub async fn card(&mut self, member_id: &str) -> Result<RentalCard, Status> {
        self.rental
            .get_rental_card(GetRentalCardRequest {
                member_id: member_id.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().rental_card.expect("card"))
    }
}

/// The type of the one violation of a FAILED_PRECONDITION status.
pub fn precondition_type(status: &Status) -> String {
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
