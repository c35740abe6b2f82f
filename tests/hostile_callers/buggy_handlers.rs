//! Handlers that misbehave: a panic answers INTERNAL, is counted, and harms no other call; a
//! call its client gives up on leaves no trace in the in-flight gauge.

use bookmesh::config::ServiceArgs;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::member::v1::member_service_server::{MemberService, MemberServiceServer};
use bookmesh::proto::member::v1::{
    GetMemberRequest, GetMemberResponse, ListMembersRequest, ListMembersResponse,
    RegisterMemberRequest, RegisterMemberResponse,
};
use bookmesh::server::ServeError;
use bookmesh::service::Parts;
use std::time::Duration;

use bookmesh::testing::{RunningServer, TestDatabase, connect, eventually};
use bookmesh_mesh_tests::free_port;
use tonic::{Code, Request, Response, Status};

use crate::helpers::series_values;

/// A member API with bugs: asked for the member `panic`, it panics; for `slow`, it takes a
/// minute.
#[derive(Clone)]
struct Buggy;

#[tonic::async_trait]
impl MemberService for Buggy {
    async fn register_member(
        &self,
        _: Request<RegisterMemberRequest>,
    ) -> Result<Response<RegisterMemberResponse>, Status> {
        Err(Status::unimplemented("buggy"))
    }

    async fn get_member(
        &self,
        request: Request<GetMemberRequest>,
    ) -> Result<Response<GetMemberResponse>, Status> {
        if request.get_ref().member_id == "panic" {
            panic!("a bug in get_member");
        }
        if request.get_ref().member_id == "slow" {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Err(Status::not_found("nobody"))
    }

    async fn list_members(
        &self,
        _: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        Err(Status::unimplemented("buggy"))
    }
}

#[derive(Debug)]
struct BuggyService(ServiceArgs);

impl bookmesh::service::Service for BuggyService {
    const NAME: &'static str = "buggy";
    type Migrator = member_service::store::migration::Migrator;
    type Api = MemberServiceServer<Buggy>;

    fn args(&self) -> &ServiceArgs {
        &self.0
    }

    fn build(self, _: &mut Parts) -> Result<Self::Api, ServeError> {
        Ok(MemberServiceServer::new(Buggy))
    }
}

async fn buggy_server() -> (RunningServer, String, TestDatabase) {
    let db = TestDatabase::fresh().await;
    let mut args = ServiceArgs::for_tests(&db.url);
    let admin = format!("127.0.0.1:{}", free_port());
    args.server.admin_listen = Some(admin.parse().expect("address"));
    let server = RunningServer::start(|listener, shutdown| {
        bookmesh::service::serve_until(BuggyService(args), listener, shutdown)
    })
    .await;
    (server, admin, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_their_clients_cancel_leave_the_in_flight_gauge() {
    let (server, admin, _db) = buggy_server().await;
    let mut client = MemberServiceClient::new(connect(&server.url()).await.expect("connect"));
    for _ in 0..5 {
        let mut request = Request::new(GetMemberRequest {
            member_id: "slow".into(),
        });
        request.set_timeout(Duration::from_millis(50));
        client.get_member(request).await.expect_err("gave up");
    }
    // The gauge is process-wide: other tests' servers in this process use other services.
    let idle = "rpc_server_active_requests{rpc_service=\"bookmesh.member.v1.MemberService\"} 0";
    eventually(
        "the cancelled calls leave the gauge",
        Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move {
                series_values(&admin)
                    .await
                    .iter()
                    .any(|s| s == idle)
                    .then_some(())
            }
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_internal_and_the_connection_lives_on() {
    let (server, admin, _db) = buggy_server().await;
    let mut client = MemberServiceClient::new(connect(&server.url()).await.expect("connect"));
    for _ in 0..3 {
        let status = client
            .get_member(GetMemberRequest {
                member_id: "panic".into(),
            })
            .await
            .expect_err("the handler panics");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(
            status.message(),
            "internal error",
            "a gRPC answer, not a reset"
        );
        // The same connection serves the next call.
        let status = client
            .get_member(GetMemberRequest {
                member_id: "someone".into(),
            })
            .await
            .expect_err("nobody");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    // The admin port starts beside the gRPC server; poll until it has answered.
    let counted = "bookmesh_server_panics_total{rpc_method=\"GetMember\",rpc_service=\"bookmesh.member.v1.MemberService\"} 3";
    eventually("the panics are counted", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            series_values(&admin)
                .await
                .iter()
                .any(|s| s == counted)
                .then_some(())
        }
    })
    .await;
    server.stop().await;
}
