//! Authorization, proven on the real services over mTLS: one table over every RPC × caller,
//! asserting the exact status each caller gets. The expected answers are written from the
//! security model (docs/security.md), not read from the policy file, so a policy that drifts
//! from it fails here.

use std::collections::HashMap;
use std::time::Duration;

use bookmesh::proto::bestbook::v1::best_book_service_client::BestBookServiceClient;
use bookmesh::proto::bestbook::v1::{GetBestBooksRequest, GetBookStatsRequest};
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::book::v1::{GetBookRequest, ListBooksRequest};
use bookmesh::proto::events::v1::dead_letter_service_client::DeadLetterServiceClient;
use bookmesh::proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use bookmesh::proto::events::v1::{
    ListDeadLettersRequest, RedriveDeadLetterRequest, SubscribeRequest,
};
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::member::v1::{GetMemberRequest, ListMembersRequest, RegisterMemberRequest};
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::proto::rental::v1::{
    ClearOverdueRequest, GetRentalCardRequest, GetRentalHistoryRequest, MarkOverdueRequest,
    RentBookRequest, ReturnBookRequest,
};
use bookmesh::testing::{
    RunningServer, TestDatabase, TestPki, bind, connect_tls, connect_tls_without_certificate,
    test_token, url_of, wait_until_serving_tls,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

/// The callers of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Nobody,
    WrongWorkload,
    RightWorkload,
    MemberSelf,
    MemberOther,
    Librarian,
    Admin,
    ExpiredToken,
    ForeignIssuer,
}

const CALLERS: [Caller; 9] = [
    Caller::Nobody,
    Caller::WrongWorkload,
    Caller::RightWorkload,
    Caller::MemberSelf,
    Caller::MemberOther,
    Caller::Librarian,
    Caller::Admin,
    Caller::ExpiredToken,
    Caller::ForeignIssuer,
];

/// Who may call one RPC, by the security model.
struct Allowed {
    anyone: bool,
    workload: Option<&'static str>,
    roles: &'static [&'static str],
    member_self: bool,
}

const OPEN: Allowed = Allowed {
    anyone: true,
    workload: None,
    roles: &[],
    member_self: false,
};

impl Allowed {
    fn expected(&self, caller: Caller, allowed_code: Code) -> Option<Code> {
        use Caller::*;
        if self.anyone {
            return Some(allowed_code);
        }
        let allowed = match caller {
            Nobody | ExpiredToken | ForeignIssuer => return Some(Code::Unauthenticated),
            // Not every RPC has a workload that may call it.
            RightWorkload => return self.workload.map(|_| allowed_code),
            WrongWorkload => false,
            MemberSelf => self.member_self || self.roles.contains(&"member"),
            MemberOther => self.roles.contains(&"member"),
            Librarian => self.roles.contains(&"librarian"),
            Admin => self.roles.contains(&"admin"),
        };
        Some(if allowed {
            allowed_code
        } else {
            Code::PermissionDenied
        })
    }
}

struct Mesh {
    pki: TestPki,
    urls: HashMap<&'static str, String>,
    channels: tokio::sync::Mutex<HashMap<(String, Option<String>), Channel>>,
    member_id: String,
    other_member_id: String,
    book_id: String,
    _servers: Vec<RunningServer>,
    _dbs: Vec<TestDatabase>,
}

impl Mesh {
    async fn start() -> Self {
        let pki = TestPki::new();
        let listeners = [bind().await, bind().await, bind().await, bind().await];
        let urls: HashMap<&'static str, String> = ["member", "book", "rental", "bestbook"]
            .into_iter()
            .zip(listeners.iter().map(url_of))
            .collect();
        let mut dbs = Vec::new();
        for _ in 0..4 {
            dbs.push(TestDatabase::fresh().await);
        }
        let [member, book, rental, bestbook] = listeners;
        let mut member_config = member_service::Config::for_tests(&dbs[0].url, &urls["rental"]);
        member_config.service.identity = pki.identity_args();
        let mut book_config = book_service::Config::for_tests(&dbs[1].url, &urls["rental"]);
        book_config.service.identity = pki.identity_args();
        let mut rental_config =
            rental_service::Config::for_tests(&dbs[2].url, &urls["member"], &urls["book"]);
        rental_config.service.identity = pki.identity_args();
        let mut bestbook_config = bestbook_service::Config::for_tests(&dbs[3].url, &urls["rental"]);
        bestbook_config.service.identity = pki.identity_args();
        let servers = vec![
            RunningServer::spawn_on(member, |l, s| {
                bookmesh::service::serve_until(member_config, l, s)
            }),
            RunningServer::spawn_on(book, |l, s| {
                bookmesh::service::serve_until(book_config, l, s)
            }),
            RunningServer::spawn_on(rental, |l, s| {
                bookmesh::service::serve_until(rental_config, l, s)
            }),
            RunningServer::spawn_on(bestbook, |l, s| {
                bookmesh::service::serve_until(bestbook_config, l, s)
            }),
        ];
        let probe = pki.credentials("check");
        for (workload, url) in &urls {
            wait_until_serving_tls(url, &probe, workload, Duration::from_secs(30)).await;
        }
        let mut mesh = Self {
            pki,
            urls,
            channels: tokio::sync::Mutex::new(HashMap::new()),
            member_id: String::new(),
            other_member_id: String::new(),
            book_id: String::new(),
            _servers: servers,
            _dbs: dbs,
        };
        let librarian = Some(mesh.token(Caller::Librarian));
        let channel = mesh.channel("member", None).await;
        for _ in 0..2 {
            let id = MemberServiceClient::new(channel.clone())
                .register_member(with(
                    RegisterMemberRequest {
                        name: "Ada".into(),
                        email: format!("ada-{}@example.org", uuid::Uuid::now_v7()),
                    },
                    &librarian,
                ))
                .await
                .expect("a librarian registers members")
                .into_inner()
                .member
                .expect("member")
                .member_id;
            if mesh.member_id.is_empty() {
                mesh.member_id = id;
            } else {
                mesh.other_member_id = id;
            }
        }
        mesh.book_id = BookServiceClient::new(mesh.channel("book", None).await)
            .register_book(with(bookmesh::testing::a_book("Dune"), &librarian))
            .await
            .expect("a librarian registers books")
            .into_inner()
            .book
            .expect("book")
            .book_id;
        mesh
    }

    /// A channel to `server`, as `workload` (its certificate) or as a user's tool (none).
    async fn channel(&self, server: &str, workload: Option<&str>) -> Channel {
        let key = (server.to_owned(), workload.map(str::to_owned));
        let mut channels = self.channels.lock().await;
        if let Some(channel) = channels.get(&key) {
            return channel.clone();
        }
        let url = &self.urls[server];
        let channel = match workload {
            Some(workload) => connect_tls(url, &self.pki.credentials(workload), server).await,
            None => connect_tls_without_certificate(url, &self.pki, server).await,
        }
        .expect("connect");
        channels.insert(key, channel.clone());
        channel
    }

    fn token(&self, caller: Caller) -> String {
        let now = chrono::Utc::now().timestamp();
        match caller {
            Caller::MemberSelf => test_token(&self.pki, &self.member_id, &["member"], 300),
            Caller::MemberOther => test_token(&self.pki, &self.other_member_id, &["member"], 300),
            Caller::Librarian => test_token(&self.pki, "librarian-1", &["librarian"], 300),
            Caller::Admin => test_token(&self.pki, "admin-1", &["admin"], 300),
            Caller::ExpiredToken => test_token(&self.pki, "librarian-1", &["librarian"], -600),
            Caller::ForeignIssuer => {
                bookmesh::auth::DevTokenIssuer::from_pki(self.pki.dir(), "bookmesh-dev", "bookmesh")
                    .expect("issuer")
                    .issue_as(
                        "https://idp.example",
                        "librarian-1",
                        &["librarian"],
                        now,
                        now + 300,
                    )
            }
            _ => String::new(),
        }
    }

    /// The channel and token `caller` calls `server` with, for an RPC whose right workload
    /// is `right`.
    async fn as_caller(
        &self,
        server: &str,
        caller: Caller,
        right: Option<&str>,
    ) -> (Channel, Option<String>) {
        match caller {
            Caller::Nobody => (self.channel(server, None).await, None),
            Caller::WrongWorkload => (self.channel(server, Some("stranger")).await, None),
            Caller::RightWorkload => (self.channel(server, right).await, None),
            _ => (self.channel(server, None).await, Some(self.token(caller))),
        }
    }
}

fn with<T>(message: T, token: &Option<String>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    request
}

fn code<T>(result: Result<T, Status>) -> (Code, Option<String>) {
    match result {
        Ok(_) => (Code::Ok, None),
        Err(status) => {
            let reason = status.get_details_error_info().map(|info| info.reason);
            (status.code(), reason)
        }
    }
}

/// One RPC of the table: where it is served, who may call it, what an allowed caller gets.
struct Rpc {
    name: &'static str,
    server: &'static str,
    allowed: Allowed,
    allowed_code: Code,
}

#[allow(clippy::too_many_lines)]
async fn call(
    mesh: &Mesh,
    rpc: &Rpc,
    channel: Channel,
    token: &Option<String>,
) -> (Code, Option<String>) {
    let unknown_book = uuid::Uuid::now_v7().to_string();
    let member_id = mesh.member_id.clone();
    match rpc.name {
        "Health/Check" => code(
            HealthClient::new(channel)
                .check(with(HealthCheckRequest::default(), token))
                .await,
        ),
        "RegisterMember" => code(
            MemberServiceClient::new(channel)
                .register_member(with(
                    RegisterMemberRequest {
                        name: "Bo".into(),
                        email: format!("bo-{}@example.org", uuid::Uuid::now_v7()),
                    },
                    token,
                ))
                .await,
        ),
        "GetMember" => code(
            MemberServiceClient::new(channel)
                .get_member(with(GetMemberRequest { member_id }, token))
                .await,
        ),
        "ListMembers" => code(
            MemberServiceClient::new(channel)
                .list_members(with(ListMembersRequest::default(), token))
                .await,
        ),
        "RegisterBook" => code(
            BookServiceClient::new(channel)
                .register_book(with(bookmesh::testing::a_book("Dune"), token))
                .await,
        ),
        "GetBook" => code(
            BookServiceClient::new(channel)
                .get_book(with(
                    GetBookRequest {
                        book_id: mesh.book_id.clone(),
                    },
                    token,
                ))
                .await,
        ),
        "ListBooks" => code(
            BookServiceClient::new(channel)
                .list_books(with(ListBooksRequest::default(), token))
                .await,
        ),
        "RentBook" => code(
            RentalServiceClient::new(channel)
                .rent_book(with(
                    RentBookRequest {
                        member_id,
                        book_id: unknown_book,
                    },
                    token,
                ))
                .await,
        ),
        "ReturnBook" => code(
            RentalServiceClient::new(channel)
                .return_book(with(
                    ReturnBookRequest {
                        member_id,
                        book_id: unknown_book,
                    },
                    token,
                ))
                .await,
        ),
        "MarkOverdue" => code(
            RentalServiceClient::new(channel)
                .mark_overdue(with(
                    MarkOverdueRequest {
                        member_id,
                        book_id: unknown_book,
                    },
                    token,
                ))
                .await,
        ),
        "ClearOverdue" => code(
            RentalServiceClient::new(channel)
                .clear_overdue(with(
                    ClearOverdueRequest {
                        member_id,
                        points: 10,
                    },
                    token,
                ))
                .await,
        ),
        "GetRentalCard" => code(
            RentalServiceClient::new(channel)
                .get_rental_card(with(GetRentalCardRequest { member_id }, token))
                .await,
        ),
        "GetRentalHistory" => code(
            RentalServiceClient::new(channel)
                .get_rental_history(with(GetRentalHistoryRequest { member_id }, token))
                .await,
        ),
        "GetBestBooks" => code(
            BestBookServiceClient::new(channel)
                .get_best_books(with(GetBestBooksRequest::default(), token))
                .await,
        ),
        "GetBookStats" => code(
            BestBookServiceClient::new(channel)
                .get_book_stats(with(
                    GetBookStatsRequest {
                        book_id: mesh.book_id.clone(),
                    },
                    token,
                ))
                .await,
        ),
        "Subscribe" => code(
            EventFeedServiceClient::new(channel)
                .subscribe(with(SubscribeRequest { after_sequence: 0 }, token))
                .await,
        ),
        "ListDeadLetters" => code(
            DeadLetterServiceClient::new(channel)
                .list_dead_letters(with(ListDeadLettersRequest::default(), token))
                .await,
        ),
        "RedriveDeadLetter" => code(
            DeadLetterServiceClient::new(channel)
                .redrive_dead_letter(with(RedriveDeadLetterRequest { dead_letter_id: 1 }, token))
                .await,
        ),
        other => panic!("no call for {other}"),
    }
}

fn rpcs() -> Vec<Rpc> {
    let staff = &["librarian"];
    let signed_in = &["member", "librarian", "admin"];
    let rpc = |name, server, workload, roles, member_self, allowed_code| Rpc {
        name,
        server,
        allowed: Allowed {
            anyone: false,
            workload,
            roles,
            member_self,
        },
        allowed_code,
    };
    let mut rpcs = vec![
        rpc(
            "RegisterMember",
            "member",
            Some("loadgen"),
            staff,
            false,
            Code::Ok,
        ),
        rpc("GetMember", "member", Some("rental"), staff, true, Code::Ok),
        rpc(
            "ListMembers",
            "member",
            Some("check"),
            staff,
            false,
            Code::Ok,
        ),
        rpc(
            "RegisterBook",
            "book",
            Some("loadgen"),
            staff,
            false,
            Code::Ok,
        ),
        rpc(
            "GetBook",
            "book",
            Some("rental"),
            signed_in,
            false,
            Code::Ok,
        ),
        rpc(
            "ListBooks",
            "book",
            Some("rental"),
            signed_in,
            false,
            Code::Ok,
        ),
        // An unknown book, a member without a card: every allowed caller gets NOT_FOUND, and
        // the table changes nothing.
        rpc(
            "RentBook",
            "rental",
            Some("loadgen"),
            staff,
            true,
            Code::NotFound,
        ),
        rpc(
            "ReturnBook",
            "rental",
            Some("loadgen"),
            staff,
            true,
            Code::NotFound,
        ),
        rpc(
            "ClearOverdue",
            "rental",
            Some("loadgen"),
            staff,
            true,
            Code::NotFound,
        ),
        rpc("MarkOverdue", "rental", None, staff, false, Code::NotFound),
        rpc(
            "GetRentalCard",
            "rental",
            Some("check"),
            staff,
            true,
            Code::NotFound,
        ),
        rpc(
            "GetRentalHistory",
            "rental",
            Some("check"),
            staff,
            true,
            Code::NotFound,
        ),
        rpc(
            "GetBestBooks",
            "bestbook",
            Some("check"),
            signed_in,
            false,
            Code::Ok,
        ),
        rpc(
            "GetBookStats",
            "bestbook",
            Some("check"),
            signed_in,
            false,
            Code::NotFound,
        ),
        // Each feed only to the services that consume it.
        rpc("Subscribe", "rental", Some("book"), &[], false, Code::Ok),
        rpc("Subscribe", "book", Some("rental"), &[], false, Code::Ok),
        rpc("Subscribe", "member", Some("rental"), &[], false, Code::Ok),
    ];
    for server in ["member", "book", "rental", "bestbook"] {
        rpcs.push(rpc(
            "ListDeadLetters",
            server,
            None,
            &["admin"],
            false,
            Code::Ok,
        ));
        rpcs.push(rpc(
            "RedriveDeadLetter",
            server,
            None,
            &["admin"],
            false,
            Code::NotFound,
        ));
        rpcs.push(Rpc {
            name: "Health/Check",
            server,
            allowed: OPEN,
            allowed_code: Code::Ok,
        });
    }
    rpcs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_every_caller_as_the_security_model_says() {
    let mesh = Mesh::start().await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for rpc in rpcs() {
        for caller in CALLERS {
            let Some(expected) = rpc.allowed.expected(caller, rpc.allowed_code) else {
                continue;
            };
            let (channel, token) = mesh
                .as_caller(rpc.server, caller, rpc.allowed.workload)
                .await;
            let (got, reason) = call(&mesh, &rpc, channel, &token).await;
            checked += 1;
            if got != expected {
                failures.push(format!(
                    "{} on {} as {caller:?}: expected {expected:?}, got {got:?} ({reason:?})",
                    rpc.name, rpc.server
                ));
            }
            if matches!(got, Code::Unauthenticated | Code::PermissionDenied) {
                assert!(
                    reason.is_some(),
                    "{} as {caller:?}: a refusal carries google.rpc.ErrorInfo",
                    rpc.name
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} calls:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 250, "checked {checked} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_why_and_made_up_methods_are_refused_without_a_series_each() {
    let mesh = Mesh::start().await;
    let (channel, token) = mesh.as_caller("rental", Caller::ExpiredToken, None).await;
    let status = RentalServiceClient::new(channel)
        .get_rental_card(with(
            GetRentalCardRequest {
                member_id: mesh.member_id.clone(),
            },
            &token,
        ))
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.get_details_error_info().map(|info| info.reason),
        Some("TOKEN_EXPIRED".into())
    );
    let (channel, token) = mesh.as_caller("rental", Caller::MemberOther, None).await;
    let status = RentalServiceClient::new(channel)
        .get_rental_card(with(
            GetRentalCardRequest {
                member_id: mesh.member_id.clone(),
            },
            &token,
        ))
        .await
        .expect_err("someone else's card");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.get_details_error_info().map(|info| info.reason),
        Some("NOT_SELF".into())
    );

    // A made-up method on a real service: refused before anything else, and counted under
    // "unknown", not under its own name.
    let (channel, token) = mesh.as_caller("rental", Caller::Librarian, None).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path =
        http::uri::PathAndQuery::from_static("/bookmesh.rental.v1.RentalService/DropAllTables");
    let result: Result<tonic::Response<()>, Status> = grpc
        .unary(
            with((), &token),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    let status = result.expect_err("made up");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.get_details_error_info().map(|info| info.reason),
        Some("NO_RULE".into())
    );
}
