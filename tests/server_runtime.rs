//! What every bookmesh server gets from the shared runtime, checked on the real services:
//! reflection (v1 and v1alpha), health that follows readiness and shutdown, and the readiness
//! gate in front of a database that is not there.

use std::time::{Duration, Instant};

use bookmesh::testing::{
    RunningServer, TestDatabase, connect, health_status, service_health_status,
};
use futures::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;

async fn member_server() -> (RunningServer, TestDatabase) {
    let db = TestDatabase::fresh().await;
    let config = member_service::Config::for_database(&db.url);
    let server = RunningServer::start(|listener, shutdown| {
        bookmesh::service::serve_until(config, listener, shutdown)
    })
    .await;
    (server, db)
}

mod v1alpha {
    pub use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    pub use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    pub use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    pub use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
}

mod v1 {
    pub use tonic_reflection::pb::v1::ServerReflectionRequest;
    pub use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    pub use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    pub use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
}

/// Asks the v1alpha reflection service (the one grpcurl 1.8 speaks) one question.
async fn ask_v1alpha(url: &str, request: v1alpha::MessageRequest) -> v1alpha::MessageResponse {
    let mut client = v1alpha::ServerReflectionClient::new(connect(url).await.expect("connect"));
    let outbound = tokio_stream::iter([v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut responses = client
        .server_reflection_info(outbound)
        .await
        .expect("reflection call")
        .into_inner();
    responses
        .next()
        .await
        .expect("one response")
        .expect("response ok")
        .message_response
        .expect("message response")
}

#[tokio::test]
async fn reflection_v1alpha_lists_only_what_the_server_serves() {
    let (server, _db) = member_server().await;
    let v1alpha::MessageResponse::ListServicesResponse(list) = ask_v1alpha(
        &server.url(),
        v1alpha::MessageRequest::ListServices(String::new()),
    )
    .await
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            // Beside its API: the member service publishes events and consumes some.
            "bookmesh.events.v1.DeadLetterService",
            "bookmesh.events.v1.EventFeedService",
            "bookmesh.member.v1.MemberService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );
}

#[tokio::test]
async fn reflection_resolves_services_and_error_detail_types() {
    let (server, _db) = member_server().await;
    for symbol in [
        "bookmesh.member.v1.MemberService",
        "google.rpc.BadRequest",
        "grpc.health.v1.Health",
    ] {
        let response = ask_v1alpha(
            &server.url(),
            v1alpha::MessageRequest::FileContainingSymbol(symbol.into()),
        )
        .await;
        assert!(
            matches!(response, v1alpha::MessageResponse::FileDescriptorResponse(ref files) if !files.file_descriptor_proto.is_empty()),
            "{symbol}: {response:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1_is_served_too() {
    let (server, _db) = member_server().await;
    let mut client =
        v1::ServerReflectionClient::new(connect(&server.url()).await.expect("connect"));
    let outbound = tokio_stream::iter([v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::MessageRequest::ListServices(String::new())),
    }]);
    let response = client
        .server_reflection_info(outbound)
        .await
        .expect("reflection call")
        .into_inner()
        .next()
        .await
        .expect("one response")
        .expect("ok")
        .message_response;
    let Some(v1::MessageResponse::ListServicesResponse(list)) = response else {
        panic!("expected a service list, got {response:?}");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "bookmesh.member.v1.MemberService")
    );
}

#[tokio::test]
async fn every_service_serves_health_for_itself_and_overall() {
    let member = member_server().await;
    let book_db = TestDatabase::fresh().await;
    let book_config = book_service::Config::for_database(&book_db.url);
    let book = RunningServer::start(|listener, shutdown| {
        bookmesh::service::serve_until(book_config, listener, shutdown)
    })
    .await;
    let rental_db = TestDatabase::fresh().await;
    let rental_config =
        rental_service::Config::for_tests(&rental_db.url, member.0.url(), book.url());
    let rental = RunningServer::start(|listener, shutdown| {
        bookmesh::service::serve_until(rental_config, listener, shutdown)
    })
    .await;
    for (url, service) in [
        (member.0.url(), "bookmesh.member.v1.MemberService"),
        (book.url(), "bookmesh.book.v1.BookService"),
        (rental.url(), "bookmesh.rental.v1.RentalService"),
    ] {
        let mut health = tonic_health::pb::health_client::HealthClient::new(
            connect(&url).await.expect("connect"),
        );
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service}");
    }
}

#[tokio::test]
async fn without_its_database_a_server_is_not_serving_and_refuses_calls() {
    // Nothing listens on port 1: the pool is lazy, so the server starts anyway.
    let config = member_service::Config::for_database("postgres://nobody@127.0.0.1:1/none");
    let server = RunningServer::spawn(|listener, shutdown| {
        bookmesh::service::serve_until(config, listener, shutdown)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = health_status(&server.url()).await {
            break status;
        }
        assert!(Instant::now() < deadline, "server never answered health");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, ServingStatus::NotServing);
    // Alive though not ready: a liveness probe must not restart it while the database is away.
    assert_eq!(
        service_health_status(&server.url(), bookmesh::server::LIVENESS_NAME).await,
        Some(ServingStatus::Serving)
    );

    let mut client =
        bookmesh::proto::member::v1::member_service_client::MemberServiceClient::connect(
            server.url(),
        )
        .await
        .expect("connect");
    let refused = client
        .list_members(bookmesh::proto::member::v1::ListMembersRequest::default())
        .await
        .expect_err("not ready");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_stop_signal_flips_health_to_not_serving_then_drains_and_exits() {
    let db = TestDatabase::fresh().await;
    let mut config = member_service::Config::for_database(&db.url);
    config.service.server.drain_delay = Duration::from_millis(800);
    let mut server = RunningServer::start(|listener, shutdown| {
        bookmesh::service::serve_until(config, listener, shutdown)
    })
    .await;
    let url = server.url();
    server.signal_stop();
    // During the drain delay the server still answers, but says NOT_SERVING.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match health_status(&url).await {
            Some(ServingStatus::NotServing) => break,
            Some(ServingStatus::Serving) => {}
            other => panic!("expected NOT_SERVING while draining, got {other:?}"),
        }
        assert!(Instant::now() < deadline, "health never flipped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), server.wait_stopped())
        .await
        .expect("server exits after draining");
    assert_eq!(health_status(&url).await, None, "port closed after exit");
}

#[tokio::test]
async fn the_admin_port_serves_metrics_liveness_and_readiness() {
    let db = TestDatabase::fresh().await;
    let admin = format!("127.0.0.1:{}", bookmesh_mesh_tests::free_port());
    let mut config = member_service::Config::for_database(&db.url);
    config.service.server.admin_listen = Some(admin.parse().expect("address"));
    config.service.server.drain_delay = Duration::from_millis(800);
    let mut server = RunningServer::start(|listener, shutdown| {
        bookmesh::service::serve_until(config, listener, shutdown)
    })
    .await;
    let get = |path: &'static str| {
        let admin = admin.clone();
        async move {
            bookmesh_mesh_tests::http_get(&admin, path)
                .await
                .expect("admin answers")
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE"), "{metrics}");
    assert_eq!(get("/nope").await.0, 404);
    server.signal_stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get("/readyz").await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz never turned 503 while draining"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.wait_stopped().await;
}

#[tokio::test]
async fn consuming_services_serve_their_dead_letters() {
    use bookmesh::proto::events::v1::dead_letter_service_client::DeadLetterServiceClient;
    use bookmesh::proto::events::v1::{ListDeadLettersRequest, RedriveDeadLetterRequest};

    let (server, _db) = member_server().await;
    let mut client = DeadLetterServiceClient::new(connect(&server.url()).await.expect("connect"));
    let page = client
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(page.dead_letters.is_empty());
    assert!(page.next_page_token.is_empty());
    let invalid = client
        .list_dead_letters(ListDeadLettersRequest {
            page_size: 1000,
            page_token: "nope".into(),
        })
        .await
        .expect_err("invalid paging");
    assert_eq!(
        bookmesh::testing::violated_fields(&invalid),
        ["page_size", "page_token"]
    );
    let missing = client
        .redrive_dead_letter(RedriveDeadLetterRequest { dead_letter_id: 42 })
        .await
        .expect_err("no such dead letter");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn replicas_starting_together_migrate_once_without_errors() {
    // Several replicas of a new deployment start at the same moment against one empty
    // database: each runs the migrations before it reports SERVING.
    let db = TestDatabase::fresh().await;
    let replicas = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let pool = bookmesh::db::connect_lazy(&url).await.expect("pool");
            bookmesh::db::migrate::<member_service::store::migration::Migrator>(&pool).await
        })
    });
    for result in futures::future::join_all(replicas).await {
        result
            .expect("task")
            .expect("every replica's migration succeeds at the first try");
    }
}
