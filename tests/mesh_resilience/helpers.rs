//! The service processes, the data they need, and a member service double.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::member::v1::member_service_server::{MemberService, MemberServiceServer};
use bookmesh::proto::member::v1::{
    GetMemberRequest, GetMemberResponse, ListMembersRequest, ListMembersResponse,
    RegisterMemberRequest, RegisterMemberResponse,
};
use bookmesh::proto::rental::v1::RentBookRequest;
use bookmesh::testing::connect;
use bookmesh_mesh_tests::ServiceProcess;
use tonic::{Code, Request, Response, Status};

const ACCESS_LOG: &str = "info,bookmesh::access=debug";

/// A temporary folder for the processes' data, removed when dropped.
pub struct Dir(std::path::PathBuf);

impl Dir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("bookmesh-mesh-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn member_replica(dir: &Dir, address: &str) -> ServiceProcess {
    ServiceProcess::spawn(
        &format!("member@{address}"),
        "member-service",
        &[
            ("BOOKMESH_LISTEN", address.to_owned()),
            // Replicas of one service share its one database.
            ("BOOKMESH_DATA_DIR", dir.path("member")),
            ("RUST_LOG", ACCESS_LOG.to_owned()),
            // These proofs are about calls, not events: no rental feed (port 1 refuses).
            ("BOOKMESH_RENTAL_ENDPOINTS", "http://127.0.0.1:1".to_owned()),
        ],
    )
}

pub fn book_process(dir: &Dir, address: &str) -> ServiceProcess {
    ServiceProcess::spawn(
        "book",
        "book-service",
        &[
            ("BOOKMESH_LISTEN", address.to_owned()),
            ("BOOKMESH_DATA_DIR", dir.path("book")),
            ("BOOKMESH_RENTAL_ENDPOINTS", "http://127.0.0.1:1".to_owned()),
        ],
    )
}

pub fn rental_process(
    dir: &Dir,
    address: &str,
    member: &str,
    book: &str,
    extra: &[(&str, String)],
) -> ServiceProcess {
    let mut env = vec![
        ("BOOKMESH_LISTEN", address.to_owned()),
        ("BOOKMESH_DATA_DIR", dir.path("rental")),
        ("BOOKMESH_MEMBER_ENDPOINTS", member.to_owned()),
        ("BOOKMESH_BOOK_ENDPOINTS", book.to_owned()),
        ("BOOKMESH_HOSTS_FILE", dir.path("hosts")),
    ];
    env.extend(extra.iter().cloned());
    ServiceProcess::spawn("rental", "rental-service", &env)
}

/// A book service, and a rental service calling it and `member` (with `extra` in its
/// environment), each on a free loopback port; started, not yet serving.
pub struct BookAndRental {
    pub book: ServiceProcess,
    pub book_address: String,
    pub rental: ServiceProcess,
    pub rental_address: String,
}

pub fn book_and_rental(dir: &Dir, member: &str, extra: &[(&str, String)]) -> BookAndRental {
    let book_address = format!("127.0.0.1:{}", bookmesh_mesh_tests::free_port());
    let book = book_process(dir, &book_address);
    let rental_address = format!("127.0.0.1:{}", bookmesh_mesh_tests::free_port());
    let rental = rental_process(
        dir,
        &rental_address,
        member,
        &format!("http://{book_address}"),
        extra,
    );
    BookAndRental {
        book,
        book_address,
        rental,
        rental_address,
    }
}

impl ScriptedMember {
    /// A member service that answers after `delay`, with UNAVAILABLE if `fail`.
    pub fn new(delay: Duration, fail: bool) -> Self {
        Self {
            delay,
            fail,
            calls: Arc::default(),
            seen_timeouts: Arc::default(),
        }
    }
}

pub async fn register_member(url: &str) -> String {
    let mut client = MemberServiceClient::new(connect(url).await.expect("connect member"));
    client
        .register_member(RegisterMemberRequest {
            name: "Load".into(),
            email: format!("{}@example.org", uuid::Uuid::now_v7().simple()),
        })
        .await
        .expect("register member")
        .into_inner()
        .member
        .expect("member")
        .member_id
}

pub async fn register_books(url: &str, n: usize) -> Vec<String> {
    let mut client = BookServiceClient::new(connect(url).await.expect("connect book"));
    let mut books = Vec::new();
    for i in 0..n {
        books.push(
            client
                .register_book(bookmesh::testing::a_book(format!("Book {i}")))
                .await
                .expect("register book")
                .into_inner()
                .book
                .expect("book")
                .book_id,
        );
    }
    books
}

pub fn rent_request(
    members: &[String],
    books: &[String],
    timeout: Duration,
) -> Request<RentBookRequest> {
    let mut request = Request::new(RentBookRequest {
        member_id: members[fastrand::usize(..members.len())].clone(),
        book_id: books[fastrand::usize(..books.len())].clone(),
    });
    request.set_timeout(timeout);
    request
}

/// Whether a RentBook answer says the mesh failed (as opposed to a business rule).
pub fn is_mesh_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
    )
}

/// A member service double whose behaviour the test picks, on a real socket.
#[derive(Clone)]
pub struct ScriptedMember {
    pub delay: Duration,
    pub fail: bool,
    pub calls: Arc<AtomicU64>,
    pub seen_timeouts: Arc<std::sync::Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl MemberService for ScriptedMember {
    async fn register_member(
        &self,
        _: Request<RegisterMemberRequest>,
    ) -> Result<Response<RegisterMemberResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn get_member(
        &self,
        request: Request<GetMemberRequest>,
    ) -> Result<Response<GetMemberResponse>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        self.seen_timeouts.lock().expect("timeouts").push(timeout);
        if self.fail {
            return Err(Status::unavailable("scripted outage"));
        }
        tokio::time::sleep(self.delay).await;
        Err(Status::not_found("scripted"))
    }

    async fn list_members(
        &self,
        _: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
}

pub async fn serve_scripted(member: ScriptedMember) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MemberServiceServer::new(member))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    format!("http://{address}")
}
