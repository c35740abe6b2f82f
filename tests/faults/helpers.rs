//! A mesh of member, book and rental processes with faults enabled and an admin port each,
//! and what the fault tests do to it.

use std::time::Duration;

use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::GetMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::proto::rental::v1::{
    GetRentalCardRequest, ItemState, RentBookRequest, RentBookResponse, RentalCard,
};
use bookmesh::testing::{connect, wait_until_serving};
use bookmesh_mesh_tests::{ServiceProcess, free_port, http_request, metric_value};
use tonic::transport::Channel;

/// Where one service listens.
#[derive(Clone)]
pub struct Addresses {
    pub grpc: String,
    pub admin: String,
}

pub struct Mesh {
    dir: std::path::PathBuf,
    pub book: Addresses,
    pub member: Addresses,
    pub rental: Addresses,
    processes: Vec<ServiceProcess>,
}

fn addresses() -> Addresses {
    Addresses {
        grpc: format!("127.0.0.1:{}", free_port()),
        admin: format!("127.0.0.1:{}", free_port()),
    }
}

impl Mesh {
    /// Member, book and rental, each with faults enabled, on fresh SQLite databases.
    pub async fn start() -> Self {
        let mut mesh = Self {
            dir: std::env::temp_dir().join(format!("bookmesh-faults-{}", uuid::Uuid::now_v7())),
            book: addresses(),
            member: addresses(),
            rental: addresses(),
            processes: Vec::new(),
        };
        for name in ["member", "book", "rental"] {
            let process = mesh.spawn(name).await;
            mesh.processes.push(process);
        }
        mesh
    }

    fn addresses_of(&self, name: &str) -> &Addresses {
        match name {
            "book" => &self.book,
            "member" => &self.member,
            _ => &self.rental,
        }
    }

    /// Starts `name` (again, on its data) and waits until it serves.
    pub async fn spawn(&self, name: &str) -> ServiceProcess {
        let own = self.addresses_of(name);
        let env = vec![
            ("BOOKMESH_EVENT_TRANSPORT", "feed".to_owned()),
            ("BOOKMESH_FAULTS_ENABLED", "true".to_owned()),
            ("BOOKMESH_LISTEN", own.grpc.clone()),
            ("BOOKMESH_ADMIN_LISTEN", own.admin.clone()),
            // The database check behind health, often: an outage shows within it.
            ("BOOKMESH_READINESS_INTERVAL", "200ms".to_owned()),
            (
                "BOOKMESH_DATA_DIR",
                self.dir.join(name).display().to_string(),
            ),
            (
                "BOOKMESH_RENTAL_ENDPOINTS",
                format!("http://{}", self.rental.grpc),
            ),
            (
                "BOOKMESH_MEMBER_ENDPOINTS",
                format!("http://{}", self.member.grpc),
            ),
            (
                "BOOKMESH_BOOK_ENDPOINTS",
                format!("http://{}", self.book.grpc),
            ),
        ];
        let process = ServiceProcess::spawn(name, &format!("{name}-service"), &env);
        wait_until_serving(&format!("http://{}", own.grpc), Duration::from_secs(60)).await;
        process
    }

    /// Replaces the running `name` process (after it crashed) with a new one.
    pub async fn restart(&mut self, name: &str) {
        if let Some(index) = self.processes.iter().position(|p| p.name == name) {
            self.processes.swap_remove(index).crash().await;
        }
        let process = self.spawn(name).await;
        self.processes.push(process);
    }

    pub async fn books(&self) -> BookServiceClient<Channel> {
        BookServiceClient::new(client(&self.book.grpc).await)
    }

    pub async fn members(&self) -> MemberServiceClient<Channel> {
        MemberServiceClient::new(client(&self.member.grpc).await)
    }

    pub async fn rentals(&self) -> RentalServiceClient<Channel> {
        RentalServiceClient::new(client(&self.rental.grpc).await)
    }

    /// A new member and a new book, registered before any fault is on.
    pub async fn member_and_book(&self, title: &str) -> (String, String) {
        bookmesh::testing::register_member_and_book(
            &format!("http://{}", self.member.grpc),
            &format!("http://{}", self.book.grpc),
            title,
        )
        .await
    }

    /// RentBook of `book` for `member`, on a new connection.
    pub async fn rent(
        &self,
        member: &str,
        book: &str,
    ) -> Result<tonic::Response<RentBookResponse>, tonic::Status> {
        self.rentals()
            .await
            .rent_book(RentBookRequest {
                member_id: member.into(),
                book_id: book.into(),
            })
            .await
    }

    /// Switches on `fault` on `service` with `settings` (JSON); panics unless it is on.
    pub async fn fault_on(&self, service: &str, fault: &str, settings: &str) {
        let (status, body) = self.put_fault(service, fault, settings).await;
        assert_eq!(status, 200, "PUT /faults/{fault} on {service}: {body}");
    }

    /// `PUT /faults/<fault>`: the status and body.
    pub async fn put_fault(&self, service: &str, fault: &str, settings: &str) -> (u16, String) {
        http_request(
            &self.addresses_of(service).admin,
            "PUT",
            &format!("/faults/{fault}"),
            &[("content-type", "application/json")],
            settings,
        )
        .await
        .expect("admin port")
    }

    /// Switches `fault` off on `service`.
    pub async fn fault_off(&self, service: &str, fault: &str) {
        let (status, body) = http_request(
            &self.addresses_of(service).admin,
            "DELETE",
            &format!("/faults/{fault}"),
            &[],
            "",
        )
        .await
        .expect("admin port");
        assert_eq!(status, 200, "DELETE /faults/{fault} on {service}: {body}");
    }

    /// A series of `service`'s `/metrics` (0 when absent).
    pub async fn metric(&self, service: &str, series: &str) -> f64 {
        metric_value(&self.addresses_of(service).admin, series)
            .await
            .unwrap_or(0.0)
    }

    /// The member's card, its first page.
    pub async fn card(&self, member_id: &str) -> Option<RentalCard> {
        self.rentals()
            .await
            .get_rental_card(GetRentalCardRequest {
                member_id: member_id.into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .rental_card
    }

    /// Waits until the card shows the book in `state`.
    pub async fn wait_for_item(&self, member_id: &str, book_id: &str, state: ItemState) {
        eventually(&format!("{book_id} {state:?}"), || async {
            let card = self.card(member_id).await?;
            card.rented_items
                .iter()
                .chain(&card.returned_items)
                .chain(&card.canceled_items)
                .any(|item| item.book_id == book_id && item.state() == state)
                .then_some(())
        })
        .await;
    }

    /// The member's points.
    pub async fn points(&self, member_id: &str) -> i64 {
        self.members()
            .await
            .get_member(GetMemberRequest {
                member_id: member_id.into(),
            })
            .await
            .expect("member")
            .into_inner()
            .member
            .expect("member")
            .points
    }

    pub async fn stop(self) {
        for process in self.processes {
            process.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn client(address: &str) -> Channel {
    connect(&format!("http://{address}"))
        .await
        .expect("connect")
}

/// Polls `probe` until it returns `Some`, or fails with `what` after 30 s.
pub async fn eventually<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    probe: impl FnMut() -> Fut,
) -> T {
    bookmesh::testing::eventually(what, Duration::from_secs(30), probe).await
}
