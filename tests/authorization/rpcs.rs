//! Every RPC of every service, with who may call it and how to call it once.

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
    RentBookRequest, ReturnBookRequest, WatchRentalHistoryRequest,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::mesh::{Mesh, code, with};
use crate::model::{Allowed, OPEN};

pub(crate) struct Rpc {
    pub(crate) name: &'static str,
    pub(crate) server: &'static str,
    pub(crate) allowed: Allowed,
    pub(crate) allowed_code: Code,
}

#[allow(clippy::too_many_lines)]
pub(crate) async fn call(
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
                .get_rental_card(with(
                    GetRentalCardRequest {
                        member_id,
                        ..Default::default()
                    },
                    token,
                ))
                .await,
        ),
        "GetRentalHistory" => code(
            RentalServiceClient::new(channel)
                .get_rental_history(with(GetRentalHistoryRequest { member_id }, token))
                .await,
        ),
        "WatchRentalHistory" => code(
            RentalServiceClient::new(channel)
                .watch_rental_history(with(WatchRentalHistoryRequest { member_id }, token))
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

pub(crate) fn rpcs() -> Vec<Rpc> {
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
        // A stream: OK once it is open (the first message says the member has no card).
        rpc(
            "WatchRentalHistory",
            "rental",
            Some("check"),
            staff,
            true,
            Code::Ok,
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
