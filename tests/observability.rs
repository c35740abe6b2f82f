//! What operators see, from a real service process: RED metrics on the admin port match the
//! traffic sent, and every JSON log line written while serving a call carries its trace id.

use std::time::Duration;

use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::member::v1::{GetMemberRequest, RegisterMemberRequest};
use bookmesh::testing::{connect, wait_until_serving};
use bookmesh_mesh_tests::{ServiceProcess, free_port, http_get};

/// The value of the sample whose line contains every one of `parts`.
fn sample(metrics: &str, name: &str, parts: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && parts.iter().all(|p| line.contains(p)))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_the_traffic_and_logs_carry_the_trace() {
    let dir = std::env::temp_dir().join(format!("bookmesh-obs-{}", uuid::Uuid::now_v7()));
    let address = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let member = ServiceProcess::spawn(
        "member",
        "member-service",
        &[
            ("BOOKMESH_LISTEN", address.clone()),
            ("BOOKMESH_ADMIN_LISTEN", admin.clone()),
            ("BOOKMESH_DATA_DIR", dir.display().to_string()),
            ("BOOKMESH_RENTAL_ENDPOINTS", "http://127.0.0.1:1".into()),
        ],
    );
    let url = format!("http://{address}");
    wait_until_serving(&url, Duration::from_secs(60)).await;
    let mut client = MemberServiceClient::new(connect(&url).await.expect("connect"));

    // Known traffic: 3 registrations, 2 invalid ones, 1 lookup of nobody.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    for i in 0..3 {
        let mut request = tonic::Request::new(RegisterMemberRequest {
            name: format!("Member {i}"),
            email: format!("m{i}@example.org"),
        });
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-b7ad6b7169203331-01")
                .parse()
                .expect("ascii"),
        );
        client.register_member(request).await.expect("register");
    }
    for _ in 0..2 {
        let invalid = RegisterMemberRequest {
            name: String::new(),
            email: "nope".into(),
        };
        client.register_member(invalid).await.expect_err("invalid");
    }
    client
        .get_member(GetMemberRequest {
            member_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("nobody");

    let (status, metrics) = http_get(&admin, "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    let service = "rpc_service=\"bookmesh.member.v1.MemberService\"";
    let register = "rpc_method=\"RegisterMember\"";
    let requests = |method: &str, code: &str| {
        sample(
            &metrics,
            "rpc_server_requests_total",
            &[service, method, &format!("rpc_grpc_status_code=\"{code}\"")],
        )
    };
    assert_eq!(requests(register, "0"), Some(3.0), "{metrics}");
    assert_eq!(
        requests(register, "3"),
        Some(2.0),
        "INVALID_ARGUMENT is code 3"
    );
    assert_eq!(
        requests("rpc_method=\"GetMember\"", "5"),
        Some(1.0),
        "NOT_FOUND is code 5"
    );
    assert_eq!(
        sample(
            &metrics,
            "rpc_server_duration_seconds_count",
            &[service, register]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "rpc_server_duration_seconds_bucket",
            &[service, register, "le=\"+Inf\""]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(&metrics, "rpc_server_active_requests", &[service]),
        Some(0.0)
    );
    assert!(sample(&metrics, "bookmesh_db_pool_connections", &["state=\"max\""]).is_some());

    // Every line written while serving the traced calls carries their trace id.
    let registered: Vec<String> = member
        .lines()
        .into_iter()
        .filter(|line| line.contains("\"member registered\""))
        .collect();
    assert_eq!(registered.len(), 3, "one log line per registration");
    for line in &registered {
        assert!(line.contains(trace_id), "no trace id in {line}");
        assert!(line.contains("\"span_id\""), "no span id in {line}");
    }
    member.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
