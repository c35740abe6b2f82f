//! An open stream does not hold a stopping server: the drain ends it with a status clients act
//! on, and the process exits cleanly, soon after its drain delay.

use std::time::Duration;

use bookmesh::testing::{connect, eventually};
use futures::StreamExt as _;
use tonic::Code;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::member;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_health_watch_ends_with_unavailable_and_the_process_exits_zero() {
    let drain_delay = Duration::from_millis(300);
    // The grace period is the default 20 s: an exit well before it shows the stream did not
    // hold the drain.
    let mut member = member(&[("BOOKMESH_DRAIN_DELAY", "300ms".into())]).await;
    let mut health = HealthClient::new(connect(&member.url).await.expect("connect"));
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(item) = watch.next().await {
            match item {
                Ok(update) => seen.push(update.status),
                Err(status) => return (seen, Some(status)),
            }
        }
        (seen, None)
    });
    let (exit, took) = member.process.stop_and_time(Duration::from_secs(15)).await;
    let (seen, end) = watcher.await.expect("watcher");
    println!("drain: exited {exit} after {took:?}; the watch saw {seen:?}, then {end:?}");
    assert!(
        seen.contains(&(ServingStatus::NotServing as i32)),
        "the watcher learnt of the drain first: {seen:?}"
    );
    let end = end.expect("the stream ends with a status, not silently");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(exit.success(), "exit status {exit}");
    assert!(
        took < drain_delay + Duration::from_secs(3),
        "exited after {took:?}: the open stream held the drain"
    );
    eventually("the last log line is read", Duration::from_secs(5), || {
        let stopped = member.process.count_lines(&["gRPC server stopped"]) == 1;
        async move { stopped.then_some(()) }
    })
    .await;
    let lines = member.process.lines();
    assert!(
        !lines
            .iter()
            .any(|line| line.contains("panicked") || line.contains("stack backtrace")),
        "no panic, no backtrace:\n{}",
        lines.join("\n")
    );
}
