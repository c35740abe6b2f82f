//! Proof 1: scale-out with re-resolution.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::testing::{connect, eventually, wait_until_serving};
use bookmesh_mesh_tests::{ServiceProcess, free_port};
use tonic::Status;

use crate::helpers::{
    BookAndRental, Dir, book_and_rental, is_mesh_failure, member_replica, register_books,
    register_member, rent_request,
};

const GET_MEMBER: &str = "\"method\":\"/bookmesh.member.v1.MemberService/GetMember\"";

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
    let BookAndRental {
        book,
        book_address,
        rental,
        rental_address,
    } = book_and_rental(
        &dir,
        &format!("http://member.test:{port}"),
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
    eventually("600 rentals answered", Duration::from_secs(60), || async {
        (answered.load(Ordering::Relaxed) >= 600).then_some(())
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
        || async { (replicas[3].count_lines(&[GET_MEMBER]) > 0).then_some(()) },
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
        || async { (answered.load(Ordering::Relaxed) >= before + 300).then_some(()) },
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
