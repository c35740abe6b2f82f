//! The event feed and the dead-letter service: subscriptions are bounded, counted and refused
//! past the bound, and both honour `--max-message-bytes` like the API.

use std::time::Duration;

use bookmesh::proto::events::v1::SubscribeRequest;
use bookmesh::proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use bookmesh::proto::member::v1::GetMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::testing::{connect, eventually};
use tonic::Code;
use tonic_prost::ProstCodec;

use crate::helpers::{member, series_values};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_past_the_bound_are_refused_and_the_api_keeps_working() {
    let member = member(&[("BOOKMESH_MAX_FEED_SUBSCRIBERS", "4".into())]).await;
    let channel = connect(&member.url).await.expect("connect");
    let mut feed = EventFeedServiceClient::new(channel.clone());
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(
            feed.subscribe(SubscribeRequest { after_sequence: 0 })
                .await
                .expect("within the bound")
                .into_inner(),
        );
    }
    let refused = feed
        .subscribe(SubscribeRequest { after_sequence: 0 })
        .await
        .expect_err("a fifth subscription");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let mut api = MemberServiceClient::new(channel.clone());
    let status = api
        .get_member(GetMemberRequest {
            member_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("nobody");
    assert_eq!(status.code(), Code::NotFound, "the API is not starved");
    assert!(
        series_values(&member.admin)
            .await
            .contains(&"bookmesh_feed_subscribers{producer=\"member\"} 4".to_owned()),
        "open subscriptions are visible"
    );
    // A subscription that ends frees its slot.
    drop(open.pop());
    eventually("a slot frees", Duration::from_secs(10), || {
        let mut feed = feed.clone();
        async move {
            feed.subscribe(SubscribeRequest { after_sequence: 0 })
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    drop(open);
    member.process.stop().await;
}

/// Any message, made as large as wanted with an unknown field.
#[derive(Clone, PartialEq, prost::Message)]
struct Padded {
    #[prost(bytes = "vec", tag = "99")]
    padding: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_and_dead_letters_refuse_messages_over_the_configured_size() {
    let member = member(&[("BOOKMESH_MAX_MESSAGE_BYTES", "4096".into())]).await;
    let channel = connect(&member.url).await.expect("connect");
    for path in [
        "/bookmesh.events.v1.EventFeedService/Subscribe",
        "/bookmesh.events.v1.DeadLetterService/ListDeadLetters",
    ] {
        for (size, refused) in [(1024, false), (8 * 1024, true)] {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.expect("ready");
            let codec: ProstCodec<Padded, Padded> = ProstCodec::default();
            let message = Padded {
                padding: vec![7; size],
            };
            let path = http::uri::PathAndQuery::from_static(path);
            let code = if path.path().ends_with("Subscribe") {
                // The stream's first item, or its end, carries a refusal.
                match grpc
                    .server_streaming(tonic::Request::new(message), path.clone(), codec)
                    .await
                {
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        tokio::time::timeout(Duration::from_millis(500), stream.message())
                            .await
                            .unwrap_or(Ok(None))
                            .map(|_| ())
                    }
                    Err(status) => Err(status),
                }
            } else {
                grpc.unary(tonic::Request::new(message), path.clone(), codec)
                    .await
                    .map(|_| ())
            }
            .map_or_else(|status| status.code(), |()| Code::Ok);
            if refused {
                // tonic answers a message over its decoding limit with OUT_OF_RANGE.
                assert!(
                    matches!(code, Code::ResourceExhausted | Code::OutOfRange),
                    "{path} with {size} bytes: {code:?}"
                );
            } else {
                assert_eq!(code, Code::Ok, "{path} with {size} bytes");
            }
        }
    }
    member.process.stop().await;
}
