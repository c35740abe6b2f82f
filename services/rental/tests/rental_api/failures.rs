//! Failures: malformed requests and a dead upstream.

use bookmesh::proto::rental::v1::ClearOverdueRequest;
use bookmesh::testing::violated_fields;
use tonic::Code;

use crate::helpers::start_mesh;

#[tokio::test]
async fn malformed_requests_are_invalid_arguments() {
    let mut mesh = start_mesh().await;
    let status = mesh.rent("nope", "").await.expect_err("invalid");
    assert_eq!(violated_fields(&status), ["member_id", "book_id"]);
    let status = mesh
        .rental
        .clear_overdue(ClearOverdueRequest {
            member_id: "x".into(),
            points: -5,
        })
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&status), ["member_id", "points"]);
}

#[tokio::test]
async fn a_dead_member_service_makes_rents_unavailable_and_changes_nothing() {
    let mut mesh = start_mesh().await;
    let member = mesh.member().await;
    let book = mesh.book("Dune").await;
    mesh.member_server
        .take()
        .expect("member server")
        .stop()
        .await;
    let status = mesh
        .rent(&member, &book)
        .await
        .expect_err("member service down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        mesh.card(&member).await.expect_err("no card").code(),
        Code::NotFound
    );
}
