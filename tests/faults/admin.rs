//! Who may switch a fault: only a process started with --faults-enabled accepts one, only
//! with settings that make sense, and, once the service verifies tokens, only from an admin.

use std::time::Duration;

use bookmesh::testing::{
    RunningServer, TestDatabase, TestPki, bind, test_token, url_of, wait_until_serving_tls,
};
use bookmesh_mesh_tests::{ServiceProcess, free_port, http_get, http_request};

use crate::helpers::Mesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_without_faults_refuses_them() {
    let dir = std::env::temp_dir().join(format!("bookmesh-nofaults-{}", uuid::Uuid::now_v7()));
    let (grpc, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let book = ServiceProcess::spawn(
        "book",
        "book-service",
        &[
            ("BOOKMESH_LISTEN", grpc.clone()),
            ("BOOKMESH_ADMIN_LISTEN", admin.clone()),
            ("BOOKMESH_DATA_DIR", dir.display().to_string()),
        ],
    );
    bookmesh::testing::wait_until_serving(&format!("http://{grpc}"), Duration::from_secs(60)).await;
    let (status, body) = http_request(
        &admin,
        "PUT",
        "/faults/error",
        &[],
        r#"{"code":"INTERNAL"}"#,
    )
    .await
    .expect("admin");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--faults-enabled"), "{body}");
    let (_, listed) = http_get(&admin, "/faults").await.expect("admin");
    assert!(listed.contains(r#""enabled":false"#), "{listed}");
    book.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_set_at_start_act_from_the_first_call_and_bad_ones_stop_the_start() {
    let dir = std::env::temp_dir().join(format!("bookmesh-startfaults-{}", uuid::Uuid::now_v7()));
    let (grpc, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let env = |faults: &str| {
        vec![
            ("BOOKMESH_LISTEN", grpc.clone()),
            ("BOOKMESH_ADMIN_LISTEN", admin.clone()),
            ("BOOKMESH_DATA_DIR", dir.display().to_string()),
            ("BOOKMESH_FAULTS_ENABLED", "true".to_owned()),
            ("BOOKMESH_FAULTS", faults.to_owned()),
        ]
    };
    let book = ServiceProcess::spawn(
        "book",
        "book-service",
        &env(r#"error={"method":"GetBook","code":"INTERNAL"};latency={"max_ms":5}"#),
    );
    bookmesh::testing::wait_until_serving(&format!("http://{grpc}"), Duration::from_secs(60)).await;
    let refused = bookmesh::proto::book::v1::book_service_client::BookServiceClient::new(
        bookmesh::testing::connect(&format!("http://{grpc}"))
            .await
            .expect("connect"),
    )
    .get_book(bookmesh::proto::book::v1::GetBookRequest {
        book_id: uuid::Uuid::now_v7().to_string(),
    })
    .await
    .expect_err("the fault answers");
    assert_eq!(refused.code(), tonic::Code::Internal, "{refused:?}");
    let (_, listed) = http_get(&admin, "/faults").await.expect("admin");
    assert!(
        listed.contains(r#""active":true,"name":"error""#)
            && listed.contains(r#""active":true,"name":"latency""#),
        "{listed}"
    );
    book.stop().await;

    // A fault the process cannot understand stops it at start, saying why.
    let mut broken =
        ServiceProcess::spawn("book", "book-service", &env(r#"error={"code":"NOPE"}"#));
    let status = broken.exit_status(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(1),
        "a bad --fault is a configuration error"
    );
    // Its output is read by another thread: wait for the line rather than race it.
    bookmesh::testing::eventually("the reason in the log", Duration::from_secs(10), || async {
        (broken.count_lines(&["--fault", "NOPE"]) > 0).then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fault_requests_are_refused_and_change_nothing() {
    let mesh = Mesh::start().await;
    let (listed_status, listed) = http_get(&mesh.book.admin, "/faults").await.expect("admin");
    assert_eq!(listed_status, 200);
    for name in [
        "latency",
        "error",
        "hang",
        "db-outage",
        "poison-event",
        "event-delay",
        "duplicate-delivery",
        "crash",
    ] {
        assert!(listed.contains(&format!(r#""name":"{name}""#)), "{listed}");
    }
    for (fault, settings, status) in [
        ("made-up", "{}", 404),
        ("error", "{}", 400),               // no code
        ("error", r#"{"code":"OK"}"#, 400), // not an error
        ("error", r#"{"code":"INTERNAL","rate":3}"#, 400),
        ("latency", r#"{"fixed_ms":999999}"#, 400), // over the bound
        ("hang", r#"{"code":"INTERNAL"}"#, 400),    // not a hang's setting
        ("crash", r#"{"point":"anywhere"}"#, 400),
        ("error", "not json", 400),
    ] {
        let (got, body) = mesh.put_fault("book", fault, settings).await;
        assert_eq!(got, status, "PUT {fault} {settings}: {body}");
    }
    let (too_large, _) = mesh.put_fault("book", "error", &" ".repeat(5000)).await;
    assert_eq!(too_large, 413);
    let (wrong_method, _) = http_request(&mesh.book.admin, "POST", "/faults/error", &[], "{}")
        .await
        .expect("admin");
    assert_eq!(wrong_method, 405);
    let (_, after) = http_get(&mesh.book.admin, "/faults").await.expect("admin");
    assert!(
        !after.contains(r#""active":true"#),
        "nothing switched on: {after}"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_identities_only_an_admin_token_switches_a_fault() {
    let pki = TestPki::new();
    let db = TestDatabase::fresh().await;
    let listener = bind().await;
    let url = url_of(&listener);
    let admin = format!("127.0.0.1:{}", free_port());
    let mut config = book_service::Config::for_tests(&db.url, "http://127.0.0.1:1");
    config.service.identity = pki.identity_args();
    config.service.server.admin_listen = Some(admin.parse().expect("address"));
    config.service.server.faults_enabled = true;
    let server = RunningServer::spawn_on(listener, |l, s| {
        bookmesh::service::serve_until(config, l, s)
    });
    wait_until_serving_tls(
        &url,
        &pki.credentials("check"),
        "book",
        Duration::from_secs(30),
    )
    .await;
    let put = |token: Option<String>| {
        let admin = admin.clone();
        async move {
            let header = token.map(|token| format!("Bearer {token}"));
            let headers: Vec<(&str, &str)> = header
                .as_deref()
                .map(|h| vec![("authorization", h)])
                .unwrap_or_default();
            http_request(
                &admin,
                "PUT",
                "/faults/latency",
                &headers,
                r#"{"fixed_ms":1}"#,
            )
            .await
            .expect("admin")
            .0
        }
    };
    assert_eq!(put(None).await, 401, "no token");
    assert_eq!(
        put(Some(test_token(&pki, "librarian-1", &["librarian"], 300))).await,
        403,
        "a librarian"
    );
    assert_eq!(put(Some("not-a-token".into())).await, 401, "a forged token");
    assert_eq!(
        put(Some(test_token(&pki, "admin-1", &["admin"], 300))).await,
        200,
        "an admin"
    );
    drop(server);
}
