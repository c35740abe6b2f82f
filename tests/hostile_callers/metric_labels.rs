//! Metric labels come from a closed set: the methods the contracts declare, and `unknown`.

use bookmesh::testing::connect;
use tonic_prost::ProstCodec;

use crate::helpers::{member, series};

/// Calls `path` with an empty message; the answer (UNIMPLEMENTED, PERMISSION_DENIED…) does
/// not matter here, only what the call leaves behind.
async fn call(channel: &tonic::transport::Channel, path: &str) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let codec: ProstCodec<(), ()> = ProstCodec::default();
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_made_up_methods_add_no_metric_series() {
    let member = member(&[]).await;
    let channel = connect(&member.url).await.expect("connect");
    // One of each kind first: the `unknown` series exist from here on.
    for path in [
        "/bookmesh.member.v1.MemberService/Warmup",
        "/grpc.health.v1.Health/Warmup",
        "/made.up.Service/Warmup",
    ] {
        let code = call(&channel, path).await;
        assert_ne!(code, tonic::Code::Ok, "{path} is not a method");
    }
    let before = series(&member.admin).await;
    assert!(
        before.iter().any(|s| s.contains("method=\"unknown\"")),
        "made-up methods are counted, as `unknown`:\n{before:#?}"
    );
    for i in 0..1000 {
        let path = match i % 3 {
            0 => format!("/bookmesh.member.v1.MemberService/Made{i}"),
            1 => format!("/grpc.health.v1.Health/Made{i}"),
            _ => format!("/made.up{i}.Service/Method{i}"),
        };
        call(&channel, &path).await;
    }
    let after = series(&member.admin).await;
    let new: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(
        new.is_empty(),
        "1,000 made-up methods added series: {new:#?}"
    );
    assert_eq!(before.len(), after.len());
    member.process.stop().await;
}
