//! The mesh in the library, proven with real processes on loopback: scale-out with
//! re-resolution, the circuit breaker, deadline propagation, the retry budget and load shedding.
//! Waits poll with deadlines; assertions are on counts. Figures (spread, latencies, memory) are
//! printed for people, and bounds on them are deliberately loose.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bookmesh::proto::book::v1::RegisterBookRequest;
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::member::v1::member_service_server::{MemberService, MemberServiceServer};
use bookmesh::proto::member::v1::{
    GetMemberRequest, GetMemberResponse, ListMembersRequest, ListMembersResponse,
    RegisterMemberRequest, RegisterMemberResponse,
};
use bookmesh::proto::rental::v1::RentBookRequest;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::testing::{connect, wait_until_serving};
use bookmesh_mesh_tests::{ServiceProcess, eventually, free_port, http_get};
use nix::sys::signal::Signal;
use tonic::{Code, Request, Response, Status};

const ACCESS_LOG: &str = "info,bookmesh::access=debug";
const GET_MEMBER: &str = "\"method\":\"/bookmesh.member.v1.MemberService/GetMember\"";

struct Dir(std::path::PathBuf);

impl Dir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("bookmesh-mesh-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn member_replica(dir: &Dir, address: &str) -> ServiceProcess {
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

fn book_process(dir: &Dir, address: &str) -> ServiceProcess {
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

fn rental_process(
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

async fn register_member(url: &str) -> String {
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

async fn register_books(url: &str, n: usize) -> Vec<String> {
    let mut client = BookServiceClient::new(connect(url).await.expect("connect book"));
    let mut books = Vec::new();
    for i in 0..n {
        books.push(
            client
                .register_book(RegisterBookRequest {
                    title: format!("Book {i}"),
                    author: "A".into(),
                    isbn: "9780306406157".into(),
                    publisher: "P".into(),
                    published_on: "2020-01-01".into(),
                    classification: "C".into(),
                    location: "L".into(),
                })
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

fn rent_request(
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
fn is_mesh_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
    )
}

/// RentBook load from `workers` loops until `stop`; counts answers and mesh failures.
fn steady_load(
    rental_url: String,
    members: Vec<String>,
    books: Vec<String>,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicU64>,
    Arc<std::sync::Mutex<Vec<Status>>>,
    tokio::task::JoinSet<()>,
) {
    let answered = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (url, members, books, stop) = (
            rental_url.clone(),
            members.clone(),
            books.clone(),
            stop.clone(),
        );
        let (answered, failures) = (answered.clone(), failures.clone());
        tasks.spawn(async move {
            let mut client = RentalServiceClient::new(connect(&url).await.expect("connect rental"));
            while !stop.load(Ordering::Relaxed) {
                let result = client
                    .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
                    .await;
                answered.fetch_add(1, Ordering::Relaxed);
                if let Err(status) = result
                    && is_mesh_failure(&status)
                {
                    failures.lock().expect("failures").push(status);
                }
            }
        });
    }
    (answered, failures, tasks)
}

fn get_member_calls(replicas: &[&ServiceProcess]) -> Vec<usize> {
    replicas
        .iter()
        .map(|r| r.count_lines(&[GET_MEMBER]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_1_scale_out_every_replica_gets_a_share_new_ones_join_and_removed_ones_cost_nothing()
{
    let dir = Dir::new();
    let port = free_port();
    let replica_addresses: Vec<String> = (2..=5).map(|i| format!("127.0.0.{i}:{port}")).collect();
    let hosts = |addresses: &[&str]| {
        let text: String = addresses
            .iter()
            .map(|a| format!("{a} member.test\n"))
            .collect();
        std::fs::write(dir.path("hosts"), text).expect("hosts file");
    };
    hosts(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let mut replicas: Vec<ServiceProcess> = replica_addresses[..3]
        .iter()
        .map(|address| member_replica(&dir, address))
        .collect();
    let book_address = format!("127.0.0.1:{}", free_port());
    let book = book_process(&dir, &book_address);
    let rental_address = format!("127.0.0.1:{}", free_port());
    let rental = rental_process(
        &dir,
        &rental_address,
        &format!("http://member.test:{port}"),
        &format!("http://{book_address}"),
        &[
            ("BOOKMESH_UPSTREAM_RESOLVE_INTERVAL", "300ms".into()),
            ("BOOKMESH_UPSTREAM_MAX_ATTEMPTS", "5".into()),
        ],
    );
    for address in replica_addresses[..3]
        .iter()
        .chain([&book_address, &rental_address])
    {
        wait_until_serving(&format!("http://{address}"), Duration::from_secs(60)).await;
    }
    let mut members = Vec::new();
    for _ in 0..10 {
        members.push(register_member(&format!("http://{}", replica_addresses[0])).await);
    }
    let books = register_books(&format!("http://{book_address}"), 30).await;
    let rental_url = format!("http://{rental_address}");

    // 1. A steady load spreads over the three replicas.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failures, mut load) = steady_load(
        rental_url.clone(),
        members.clone(),
        books.clone(),
        8,
        stop.clone(),
    );
    eventually("600 rentals answered", Duration::from_secs(60), || {
        answered.load(Ordering::Relaxed) >= 600
    })
    .await;
    let counts = get_member_calls(&replicas.iter().collect::<Vec<_>>());
    let total: usize = counts.iter().sum();
    println!("scale-out: GetMember calls per replica {counts:?} (total {total})");
    for (replica, count) in replicas.iter().zip(&counts) {
        assert!(
            *count * 5 >= total,
            "{} got {count} of {total} calls: less than a fifth (fair share is a third)",
            replica.name
        );
    }

    // 2. A fourth replica appears behind the name: it gets calls within the re-resolution
    //    interval (300 ms; allowed 5 s).
    replicas.push(member_replica(&dir, &replica_addresses[3]));
    wait_until_serving(
        &format!("http://{}", replica_addresses[3]),
        Duration::from_secs(60),
    )
    .await;
    hosts(&["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]);
    let added = Instant::now();
    eventually(
        "the new replica serves GetMember",
        Duration::from_secs(5),
        || replicas[3].count_lines(&[GET_MEMBER]) > 0,
    )
    .await;
    println!(
        "scale-out: new replica got its first call {:?} after it was added",
        added.elapsed()
    );

    // 3. One replica goes away (stopped first, the name updated after, as on Kubernetes where
    //    the two race): retries absorb it, no call fails.
    let leaving = replicas.remove(0);
    let before = answered.load(Ordering::Relaxed);
    leaving.stop().await;
    hosts(&["127.0.0.3", "127.0.0.4", "127.0.0.5"]);
    eventually(
        "300 more rentals after the removal",
        Duration::from_secs(60),
        || answered.load(Ordering::Relaxed) >= before + 300,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    let failures = failures.lock().expect("failures").clone();
    assert!(
        failures.is_empty(),
        "calls failed during scale-out/in: {failures:?}"
    );
    let counts = get_member_calls(&replicas.iter().collect::<Vec<_>>());
    println!("scale-out: after removal, GetMember calls per remaining replica {counts:?}");

    rental.stop().await;
    book.stop().await;
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_2_a_hung_upstream_trips_the_breaker_and_it_closes_again_by_itself() {
    let dir = Dir::new();
    std::fs::write(dir.path("hosts"), "").expect("hosts");
    let member_address = format!("127.0.0.1:{}", free_port());
    let member = member_replica(&dir, &member_address);
    let book_address = format!("127.0.0.1:{}", free_port());
    let book = book_process(&dir, &book_address);
    let rental_address = format!("127.0.0.1:{}", free_port());
    let admin_address = format!("127.0.0.1:{}", free_port());
    let rental = rental_process(
        &dir,
        &rental_address,
        &format!("http://{member_address}"),
        &format!("http://{book_address}"),
        &[
            ("BOOKMESH_ADMIN_LISTEN", admin_address.clone()),
            (
            "BOOKMESH_UPSTREAM_OPTIONS",
            "book.call_timeout=300ms,book.max_attempts=1,book.breaker_window=10,book.breaker_minimum_calls=5,book.breaker_open_duration=1s".into(),
            ),
        ],
    );
    for address in [&member_address, &book_address, &rental_address] {
        wait_until_serving(&format!("http://{address}"), Duration::from_secs(60)).await;
    }
    let members = vec![register_member(&format!("http://{member_address}")).await];
    let books = register_books(&format!("http://{book_address}"), 40).await;
    let mut client = RentalServiceClient::new(
        connect(&format!("http://{rental_address}"))
            .await
            .expect("connect"),
    );
    client
        .rent_book(rent_request(&members, &books[..1], Duration::from_secs(3)))
        .await
        .expect("a rent while everything is up");

    // The book service hangs (stopped, not dead: connections stay open, calls time out).
    book.signal(Signal::SIGSTOP);
    let mut calls_until_open = 0;
    loop {
        calls_until_open += 1;
        assert!(calls_until_open <= 30, "breaker never opened");
        let status = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await
            .expect_err("book service hangs");
        if status.message().contains("unavailable")
            && rental.count_lines(&["circuit breaker opened"]) > 0
        {
            break;
        }
    }
    let (_, metrics) = http_get(&admin_address, "/metrics").await.expect("scrape");
    assert!(
        metrics.contains("bookmesh_client_circuit_breaker_state{upstream=\"book\"} 1"),
        "the open breaker is exported:\n{metrics}"
    );
    let mut fast_failures = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let status = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await
            .expect_err("breaker open");
        fast_failures.push(started.elapsed());
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    fast_failures.sort();
    println!(
        "breaker: opened after {calls_until_open} calls; while open RentBook fails in {:?} (median), {:?} (max) instead of the 300 ms book timeout",
        fast_failures[10], fast_failures[19]
    );
    assert!(
        fast_failures[19] < Duration::from_millis(150),
        "failing fast, not waiting for the timeout"
    );

    // The book service comes back: half-open trial calls close the breaker, no operator action.
    book.signal(Signal::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let result = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await;
        match result {
            Ok(_) => break,
            Err(status) if !is_mesh_failure(&status) => break,
            Err(_) => {
                assert!(Instant::now() < deadline, "breaker did not close");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        rental.count_lines(&["half-open"]) > 0,
        "went through half-open"
    );
    // The trial calls (3) must all succeed before the breaker closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rental.count_lines(&["circuit breaker closed"]) == 0 {
        assert!(
            Instant::now() < deadline,
            "breaker did not close after successful trials"
        );
        let _ = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await;
    }

    rental.stop().await;
    book.stop().await;
    member.stop().await;
}

/// A member service double whose behaviour the test picks, on a real socket.
#[derive(Clone)]
struct ScriptedMember {
    delay: Duration,
    fail: bool,
    calls: Arc<AtomicU64>,
    seen_timeouts: Arc<std::sync::Mutex<Vec<String>>>,
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

async fn serve_scripted(member: ScriptedMember) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_3_a_slow_upstream_gets_the_callers_smaller_deadline_and_the_caller_answers_in_time()
{
    let dir = Dir::new();
    std::fs::write(dir.path("hosts"), "").expect("hosts");
    let slow = ScriptedMember {
        delay: Duration::from_secs(5),
        fail: false,
        calls: Arc::default(),
        seen_timeouts: Arc::default(),
    };
    let member_url = serve_scripted(slow.clone()).await;
    let book_address = format!("127.0.0.1:{}", free_port());
    let book = book_process(&dir, &book_address);
    let rental_address = format!("127.0.0.1:{}", free_port());
    // The rental's own timeout for member calls is 2 s; the client's deadline is 400 ms.
    let rental = rental_process(
        &dir,
        &rental_address,
        &member_url,
        &format!("http://{book_address}"),
        &[],
    );
    for address in [&book_address, &rental_address] {
        wait_until_serving(&format!("http://{address}"), Duration::from_secs(60)).await;
    }
    let books = register_books(&format!("http://{book_address}"), 1).await;
    let members = vec![uuid::Uuid::now_v7().to_string()];
    let mut client = RentalServiceClient::new(
        connect(&format!("http://{rental_address}"))
            .await
            .expect("connect"),
    );
    let started = Instant::now();
    let status = client
        .rent_book(rent_request(&members, &books, Duration::from_millis(400)))
        .await
        .expect_err("member is too slow");
    let took = started.elapsed();
    println!(
        "deadline: RentBook answered {:?} after {took:?}; member saw grpc-timeout {:?}",
        status.code(),
        slow.seen_timeouts.lock().expect("t")
    );
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        took < Duration::from_millis(1000),
        "answered within (about) its own deadline"
    );
    let seen = slow.seen_timeouts.lock().expect("timeouts").clone();
    assert!(!seen.is_empty(), "the call reached the member");
    for timeout in seen {
        let budget =
            bookmesh::deadline::parse_grpc_timeout(&timeout).expect("a grpc-timeout was sent");
        assert!(
            budget <= Duration::from_millis(400),
            "member saw {budget:?}, more than the caller's 400 ms"
        );
    }
    rental.stop().await;
    book.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_4_retries_stay_within_the_budget_when_every_call_fails() {
    let dir = Dir::new();
    std::fs::write(dir.path("hosts"), "").expect("hosts");
    let failing = ScriptedMember {
        delay: Duration::ZERO,
        fail: true,
        calls: Arc::default(),
        seen_timeouts: Arc::default(),
    };
    let member_url = serve_scripted(failing.clone()).await;
    let book_address = format!("127.0.0.1:{}", free_port());
    let book = book_process(&dir, &book_address);
    let rental_address = format!("127.0.0.1:{}", free_port());
    let rental = rental_process(
        &dir,
        &rental_address,
        &member_url,
        &format!("http://{book_address}"),
        &[
            ("BOOKMESH_UPSTREAM_MAX_ATTEMPTS", "5".into()),
            // Keep the breaker out of the way: this proof is about the retry budget alone.
            (
                "BOOKMESH_UPSTREAM_OPTIONS",
                "member.breaker_minimum_calls=1000000".into(),
            ),
        ],
    );
    for address in [&book_address, &rental_address] {
        wait_until_serving(&format!("http://{address}"), Duration::from_secs(60)).await;
    }
    let books = register_books(&format!("http://{book_address}"), 1).await;
    let members = vec![uuid::Uuid::now_v7().to_string()];
    let mut client = RentalServiceClient::new(
        connect(&format!("http://{rental_address}"))
            .await
            .expect("connect"),
    );
    const CALLS: u64 = 50;
    for _ in 0..CALLS {
        let status = client
            .rent_book(rent_request(&members, &books, Duration::from_secs(3)))
            .await
            .expect_err("member always fails");
        assert_eq!(status.code(), Code::Unavailable);
    }
    let attempts = failing.calls.load(Ordering::Relaxed);
    println!(
        "retry budget: {CALLS} calls made {attempts} attempts (5 per call without a budget: {})",
        CALLS * 5
    );
    assert!(attempts >= CALLS, "every call made at least one attempt");
    assert!(
        attempts <= CALLS + 5,
        "the token bucket (10 tokens, retry above 5) allows about 5 retries in an outage, got {}",
        attempts - CALLS
    );
    rental.stop().await;
    book.stop().await;
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_5_beyond_the_concurrency_limit_calls_are_shed_fast_and_memory_stays_bounded() {
    let dir = Dir::new();
    let address = format!("127.0.0.1:{}", free_port());
    let member = ServiceProcess::spawn(
        "member",
        "member-service",
        &[
            ("BOOKMESH_LISTEN", address.clone()),
            ("BOOKMESH_DATA_DIR", dir.path("member")),
            ("BOOKMESH_MAX_CONCURRENT_REQUESTS", "4".into()),
            ("BOOKMESH_RENTAL_ENDPOINTS", "http://127.0.0.1:1".into()),
        ],
    );
    let url = format!("http://{address}");
    wait_until_serving(&url, Duration::from_secs(60)).await;
    for _ in 0..100 {
        register_member(&url).await;
    }
    let rss_before = resident_kib(member.pid());
    // Several connections, fewer calls than their stream limits: what waits, waits on the server.
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(connect(&url).await.expect("connect"));
    }
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut shed_latency = Vec::new();
    let mut served_latency = Vec::new();
    for _round in 0..5 {
        let calls = (0..200).map(|i| {
            let mut client = MemberServiceClient::new(channels[i % channels.len()].clone());
            async move {
                let started = Instant::now();
                let result = client
                    .list_members(ListMembersRequest {
                        page_size: 100,
                        page_token: String::new(),
                    })
                    .await;
                (result.map(|_| ()), started.elapsed())
            }
        });
        for (result, latency) in futures::future::join_all(calls).await {
            let code = result.as_ref().err().map_or(Code::Ok, Status::code);
            *codes.entry(format!("{code:?}")).or_default() += 1;
            match code {
                Code::Ok => served_latency.push(latency),
                Code::ResourceExhausted => shed_latency.push(latency),
                other => panic!("unexpected {other:?}: {result:?}"),
            }
        }
    }
    let rss_after = resident_kib(member.pid());
    shed_latency.sort();
    served_latency.sort();
    println!(
        "overload: {codes:?}; shed median {:?}, served median {:?}; RSS {rss_before} KiB → {rss_after} KiB",
        shed_latency.get(shed_latency.len() / 2),
        served_latency.get(served_latency.len() / 2)
    );
    assert!(
        !shed_latency.is_empty(),
        "1000 calls, 200 at once, over a limit of 4: some must be shed"
    );
    assert!(!served_latency.is_empty(), "and some served");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew by {} KiB under overload",
        rss_after.saturating_sub(rss_before)
    );
    member.stop().await;
}
