//! Proof 5: load shedding beyond the concurrency limit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bookmesh::proto::member::v1::ListMembersRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::testing::{connect, wait_until_serving};
use bookmesh_mesh_tests::{ServiceProcess, free_port};
use tonic::{Code, Status};

use crate::helpers::{Dir, register_member};

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
