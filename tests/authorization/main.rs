//! Authorization, proven on the real services over mTLS: one table over every RPC × caller,
//! asserting the exact status each caller gets. The expected answers are written from the
//! security model (docs/security.md), not read from the policy file, so a policy that drifts
//! from it fails here.
//!
//! `model`: the callers and who may call what; `mesh`: the four services on mTLS and a channel
//! per caller; `rpcs`: every RPC, called once per caller.

mod mesh;
mod model;
mod rpcs;

use bookmesh::proto::rental::v1::GetRentalCardRequest;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use mesh::{Mesh, with};
use model::{CALLERS, Caller};
use rpcs::{call, rpcs};

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
    // The member's card, read by someone who may not: the answer says why.
    for (caller, code, reason) in [
        (Caller::ExpiredToken, Code::Unauthenticated, "TOKEN_EXPIRED"),
        (Caller::MemberOther, Code::PermissionDenied, "NOT_SELF"),
    ] {
        let (channel, token) = mesh.as_caller("rental", caller, None).await;
        let status = RentalServiceClient::new(channel)
            .get_rental_card(with(
                GetRentalCardRequest {
                    member_id: mesh.member_id.clone(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{caller:?}");
        assert_eq!(
            status.get_details_error_info().map(|info| info.reason),
            Some(reason.into()),
            "{caller:?}"
        );
    }

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
