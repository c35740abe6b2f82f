//! The sagas under a randomized workload with crashes: the four services run as real processes
//! on loopback; members rent, return, fall overdue and pay while the book service and the rental
//! service are killed (SIGKILL, no drain) and restarted on their data. Afterwards the
//! consistency check (the `bookmesh-check` library, reading only the public APIs) must find
//! every service in agreement: no event lost, none applied twice.

use std::time::Duration;

use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::RegisterMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::proto::rental::v1::{
    ClearOverdueRequest, GetRentalCardRequest, MarkOverdueRequest, RentBookRequest,
    ReturnBookRequest,
};
use bookmesh::testing::{connect, wait_until_serving};
use bookmesh_check::{Endpoints, check_until_consistent};
use bookmesh_mesh_tests::{ServiceProcess, free_port};

struct Mesh {
    dir: std::path::PathBuf,
    events: bookmesh::config::EventArgs,
    book: String,
    member: String,
    rental: String,
    bestbook: String,
}

impl Mesh {
    fn env(&self, name: &str, listen: &str) -> Vec<(&'static str, String)> {
        let transport = if self.events.event_transport == bookmesh::config::EventTransport::Nats {
            "nats"
        } else {
            "feed"
        };
        vec![
            ("BOOKMESH_EVENT_TRANSPORT", transport.to_owned()),
            ("BOOKMESH_NATS_URL", self.events.nats_url.clone()),
            ("BOOKMESH_NATS_PREFIX", self.events.nats_prefix.clone()),
            (
                "BOOKMESH_NATS_MAX_BYTES",
                self.events.nats_max_bytes.to_string(),
            ),
            ("BOOKMESH_LISTEN", listen.to_owned()),
            (
                "BOOKMESH_DATA_DIR",
                self.dir.join(name).display().to_string(),
            ),
            (
                "BOOKMESH_RENTAL_ENDPOINTS",
                format!("http://{}", self.rental),
            ),
            (
                "BOOKMESH_MEMBER_ENDPOINTS",
                format!("http://{}", self.member),
            ),
            ("BOOKMESH_BOOK_ENDPOINTS", format!("http://{}", self.book)),
        ]
    }

    async fn start(&self, name: &str) -> ServiceProcess {
        let listen = match name {
            "book" => &self.book,
            "member" => &self.member,
            "rental" => &self.rental,
            _ => &self.bestbook,
        };
        let process =
            ServiceProcess::spawn(name, &format!("{name}-service"), &self.env(name, listen));
        wait_until_serving(&format!("http://{listen}"), Duration::from_secs(60)).await;
        process
    }
}

/// One random operation; business refusals are part of the game and ignored.
async fn random_operation(
    rental: &mut RentalServiceClient<tonic::transport::Channel>,
    members: &[String],
    books: &[String],
) {
    let member_id = members[fastrand::usize(..members.len())].clone();
    let book_id = books[fastrand::usize(..books.len())].clone();
    match fastrand::u8(..10) {
        0..=4 => {
            let _ = rental
                .rent_book(RentBookRequest { member_id, book_id })
                .await;
        }
        5..=7 => {
            // Return something the member holds, if anything.
            if let Ok(card) = rental
                .get_rental_card(GetRentalCardRequest {
                    member_id: member_id.clone(),
                    ..Default::default()
                })
                .await
                && let Some(item) = card
                    .into_inner()
                    .rental_card
                    .and_then(|c| c.rented_items.first().cloned())
            {
                if fastrand::bool() {
                    let _ = rental
                        .mark_overdue(MarkOverdueRequest {
                            member_id: member_id.clone(),
                            book_id: item.book_id.clone(),
                        })
                        .await;
                }
                let _ = rental
                    .return_book(ReturnBookRequest {
                        member_id,
                        book_id: item.book_id,
                    })
                    .await;
            }
        }
        _ => {
            if let Ok(card) = rental
                .get_rental_card(GetRentalCardRequest {
                    member_id: member_id.clone(),
                    ..Default::default()
                })
                .await
                && let Some(card) = card.into_inner().rental_card
                && card.late_fee > 0
            {
                let _ = rental
                    .clear_overdue(ClearOverdueRequest {
                        member_id,
                        points: card.late_fee,
                    })
                    .await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_rentals_with_crashes_end_consistent() {
    let dir = std::env::temp_dir().join(format!("bookmesh-saga-{}", uuid::Uuid::now_v7()));
    let address = || format!("127.0.0.1:{}", free_port());
    let mesh = Mesh {
        dir: dir.clone(),
        // The transport under test: the feed, or JetStream with BOOKMESH_TEST_TRANSPORT=nats.
        events: bookmesh::config::EventArgs::for_tests(&format!(
            "t{}",
            uuid::Uuid::now_v7().simple()
        )),
        book: address(),
        member: address(),
        rental: address(),
        bestbook: address(),
    };
    let member = mesh.start("member").await;
    let mut book = Some(mesh.start("book").await);
    let mut rental = Some(mesh.start("rental").await);
    let bestbook = mesh.start("bestbook").await;

    let mut members = Vec::new();
    let mut member_client = MemberServiceClient::new(
        connect(&format!("http://{}", mesh.member))
            .await
            .expect("member"),
    );
    for i in 0..8 {
        members.push(
            member_client
                .register_member(RegisterMemberRequest {
                    name: format!("Member {i}"),
                    email: format!("m{i}-{}@example.org", uuid::Uuid::now_v7().simple()),
                })
                .await
                .expect("register")
                .into_inner()
                .member
                .expect("member")
                .member_id,
        );
    }
    let mut book_client = BookServiceClient::new(
        connect(&format!("http://{}", mesh.book))
            .await
            .expect("book"),
    );
    let mut books = Vec::new();
    // Fewer copies than members: rentals compete, and some are compensated.
    for i in 0..5 {
        books.push(
            book_client
                .register_book(bookmesh::testing::a_book(format!("Copy {i}")))
                .await
                .expect("register book")
                .into_inner()
                .book
                .expect("book")
                .book_id,
        );
    }

    let rental_url = format!("http://{}", mesh.rental);
    for round in 0..3 {
        let workers = (0..4).map(|_| {
            let (members, books, url) = (members.clone(), books.clone(), rental_url.clone());
            tokio::spawn(async move {
                for _ in 0..60 {
                    // The rental service may be down for a moment: reconnect each time.
                    if let Ok(channel) = connect(&url).await {
                        random_operation(&mut RentalServiceClient::new(channel), &members, &books)
                            .await;
                    }
                }
            })
        });
        let workload = futures::future::join_all(workers);
        // Crash a service while the workload runs (SIGKILL: no drain, open transactions
        // lost), then bring it back on its data.
        let (victim, name) = if round % 2 == 0 {
            (&mut book, "book")
        } else {
            (&mut rental, "rental")
        };
        let crash = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if let Some(process) = victim.take() {
                process.crash().await;
            }
            *victim = Some(mesh.start(name).await);
        };
        tokio::join!(workload, crash);
    }

    let endpoints = Endpoints {
        // The process suites run the development mode.
        identity: bookmesh::identity::Identity::insecure(bookmesh::identity::SpiffeId::new(
            "bookmesh.local",
            "bookmesh",
            "check",
        )),
        book: format!("http://{}", mesh.book),
        member: format!("http://{}", mesh.member),
        rental: rental_url,
        bestbook: Some(format!("http://{}", mesh.bestbook)),
        stuck_after: Duration::from_secs(300),
    };
    let report = check_until_consistent(&endpoints, Duration::from_secs(60))
        .await
        .expect("check");
    println!(
        "saga consistency: {} members, {} books, {} items, {} settling, violations {:?}",
        report.members, report.books, report.items, report.settling, report.violations
    );
    assert!(report.items > 0, "the workload rented something");
    assert!(report.is_consistent(), "{report:?}");

    // The check can fail: a copy marked UNAVAILABLE behind the sagas' back is caught.
    let book_db = bookmesh::db::connect_lazy(&format!(
        "sqlite://{}/book.db?mode=rwc",
        mesh.dir.join("book").display()
    ))
    .await
    .expect("book db");
    let free_book = book_client
        .register_book(bookmesh::testing::a_book("Never rented"))
        .await
        .expect("register book")
        .into_inner()
        .book
        .expect("book")
        .book_id;
    book_service::store::BookStore::new(book_db)
        .set_status(
            book_service::domain::BookId::parse(&free_book).expect("uuid"),
            book_service::domain::BookStatus::Unavailable,
        )
        .await
        .expect("corrupt");
    let corrupted = bookmesh_check::check(&endpoints).await.expect("check");
    assert!(!corrupted.violations.is_empty(), "{corrupted:?}");

    for process in [rental, book]
        .into_iter()
        .flatten()
        .chain([member, bestbook])
    {
        process.stop().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}
