//! The member service over real gRPC on loopback, on the database engine picked by
//! `BOOKMESH_TEST_DB` (SQLite unless told otherwise).

use std::collections::HashSet;

use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::member::v1::{
    GetMemberRequest, ListMembersRequest, Member, RegisterMemberRequest,
};
use bookmesh::testing::{RunningServer, TestDatabase, violated_fields};
use tonic::Code;
use tonic::transport::Channel;

struct Harness {
    client: MemberServiceClient<Channel>,
    _server: RunningServer,
    _db: TestDatabase,
}

async fn start() -> Harness {
    let db = TestDatabase::fresh().await;
    let config = member_service::Config::for_database(&db.url);
    let server = RunningServer::start(|listener, shutdown| {
        bookmesh::service::serve_until(config, listener, shutdown)
    })
    .await;
    let client = MemberServiceClient::connect(server.url())
        .await
        .expect("connect");
    Harness {
        client,
        _server: server,
        _db: db,
    }
}

async fn register(client: &mut MemberServiceClient<Channel>, name: &str, email: &str) -> Member {
    client
        .register_member(RegisterMemberRequest {
            name: name.into(),
            email: email.into(),
        })
        .await
        .expect("register")
        .into_inner()
        .member
        .expect("member in response")
}

async fn all_members(client: &mut MemberServiceClient<Channel>) -> Vec<Member> {
    client
        .list_members(ListMembersRequest {
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner()
        .members
}

#[tokio::test]
async fn registered_member_can_be_read_back() {
    let mut h = start().await;
    let member = register(&mut h.client, "  Ada Lovelace ", "Ada@Example.org").await;
    assert_eq!(member.name, "Ada Lovelace");
    assert_eq!(member.email, "ada@example.org");
    assert_eq!(member.points, 0);
    assert!(member.created_at.is_some());
    assert_eq!(member.member_id.len(), 36);

    let fetched = h
        .client
        .get_member(GetMemberRequest {
            member_id: member.member_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .member
        .expect("member");
    assert_eq!(fetched, member);
}

#[tokio::test]
async fn email_is_unique_ignoring_case_and_duplicate_changes_nothing() {
    let mut h = start().await;
    register(&mut h.client, "Ada", "ada@example.org").await;
    let status = h
        .client
        .register_member(RegisterMemberRequest {
            name: "Someone else".into(),
            email: "ADA@example.org".into(),
        })
        .await
        .expect_err("duplicate email");
    assert_eq!(status.code(), Code::AlreadyExists);
    let members = all_members(&mut h.client).await;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "Ada");
}

#[tokio::test]
async fn concurrent_registrations_with_one_email_have_one_winner() {
    let h = start().await;
    let attempts = (0..8).map(|i| {
        let mut client = h.client.clone();
        async move {
            client
                .register_member(RegisterMemberRequest {
                    name: format!("Racer {i}"),
                    email: "race@example.org".into(),
                })
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for result in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(result.code(), Code::AlreadyExists, "{result:?}");
    }
}

#[tokio::test]
async fn invalid_registration_lists_every_field_and_stores_nothing() {
    let mut h = start().await;
    let status = h
        .client
        .register_member(RegisterMemberRequest {
            name: "   ".into(),
            email: "not-an-email".into(),
        })
        .await
        .expect_err("invalid input");
    assert_eq!(violated_fields(&status), ["name", "email"]);
    assert!(all_members(&mut h.client).await.is_empty());
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let mut h = start().await;
    let missing = h
        .client
        .get_member(GetMemberRequest {
            member_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown member");
    assert_eq!(missing.code(), Code::NotFound);

    let malformed = h
        .client
        .get_member(GetMemberRequest {
            member_id: "42".into(),
        })
        .await
        .expect_err("malformed id");
    assert_eq!(violated_fields(&malformed), ["member_id"]);
}

#[tokio::test]
async fn pages_cover_every_member_once_in_registration_order() {
    let mut h = start().await;
    let mut registered = Vec::new();
    for i in 0..5 {
        registered.push(
            register(
                &mut h.client,
                &format!("M{i}"),
                &format!("m{i}@example.org"),
            )
            .await
            .member_id,
        );
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = h
            .client
            .list_members(ListMembersRequest {
                page_size: 2,
                page_token: token,
            })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert!(page.members.len() <= 2);
        seen.extend(page.members.into_iter().map(|m| m.member_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, registered);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);
}

#[tokio::test]
async fn page_size_and_token_are_validated() {
    let mut h = start().await;
    let status = h
        .client
        .list_members(ListMembersRequest {
            page_size: 1000,
            page_token: "garbage".into(),
        })
        .await
        .expect_err("out of range");
    assert_eq!(violated_fields(&status), ["page_size", "page_token"]);
}
