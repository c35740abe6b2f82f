//! HTTP/2 abuse, sent as raw frames on a socket: floods end with GOAWAY or a closed
//! connection, oversized headers are refused, and other clients keep being served.

use std::time::Duration;

use bookmesh::proto::member::v1::GetMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::testing::{connect, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use crate::helpers::{member, series, series_values};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    bytes.extend(stream.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// A header block of literal fields without indexing (HPACK's simplest form; every name and
/// value here is under 127 bytes).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend(name.as_bytes());
        block.push(value.len() as u8);
        block.extend(value.as_bytes());
    }
    block
}

/// A request the server must refuse by resetting its stream: it has no `:path`.
fn malformed_headers(stream: u32) -> Vec<u8> {
    let block = header_block(&[(":method", "POST"), (":scheme", "http")]);
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
}

fn get_member_headers(stream: u32, end_stream: bool) -> Vec<u8> {
    let block = header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/bookmesh.member.v1.MemberService/GetMember"),
        (":authority", "member"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &block)
}

/// A raw connection after the preface and an empty SETTINGS frame. A write the server refused
/// (it closed the connection at once) is not an error here: reading tells how it ended.
async fn raw_connection(url: &str) -> TcpStream {
    let mut socket = TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .expect("connect");
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(SETTINGS, 0, 0, &[]));
    let _ = socket.write_all(&opening).await;
    socket
}

/// How the server ended the connection: the GOAWAY's error code, or `None` for a close
/// without one. Panics if the connection is still open after `within`.
async fn how_it_ends(mut reader: tokio::net::tcp::OwnedReadHalf, within: Duration) -> Option<u32> {
    let read_all = async {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            // Frames are parsed off the front as they are complete.
            while buffer.len() >= 9 {
                let len =
                    (buffer[0] as usize) << 16 | (buffer[1] as usize) << 8 | buffer[2] as usize;
                if buffer.len() < 9 + len {
                    break;
                }
                if buffer[3] == GOAWAY && len >= 8 {
                    return Some(u32::from_be_bytes([
                        buffer[13], buffer[14], buffer[15], buffer[16],
                    ]));
                }
                buffer.drain(..9 + len);
            }
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all)
        .await
        .expect("the server ended the connection")
}

/// An ordinary client on its own connection is still served.
async fn others_are_served(url: &str) {
    let mut client = MemberServiceClient::new(connect(url).await.expect("connect"));
    let status = client
        .get_member(GetMemberRequest {
            member_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("nobody has that id");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_streams_the_server_must_reset_ends_in_goaway() {
    let member = member(&[]).await;
    let (reader, mut writer) = raw_connection(&member.url).await.into_split();
    let ending = tokio::spawn(how_it_ends(reader, Duration::from_secs(20)));
    // Each stream is a malformed request, which the server answers by resetting the stream
    // itself ("made you reset"): no limit, and this goes on for as long as the client likes.
    let flood = async {
        for i in 0..5000u32 {
            let stream = 2 * i + 1;
            if writer.write_all(&malformed_headers(stream)).await.is_err() {
                return i;
            }
        }
        5000
    };
    let sent = flood.await;
    let code = ending.await.expect("reader");
    println!("made-you-reset flood: {sent} streams sent; the server ended with GOAWAY {code:?}");
    assert_eq!(code, Some(ENHANCE_YOUR_CALM), "GOAWAY ENHANCE_YOUR_CALM");
    others_are_served(&member.url).await;
    member.process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_leaves_other_clients_served() {
    let member = member(&[]).await;
    let (reader, mut writer) = raw_connection(&member.url).await.into_split();
    let reading = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(20),
            how_it_ends(reader, Duration::from_secs(20)),
        )
        .await
    });
    let mut sent = 0;
    for i in 0..20_000u32 {
        let stream = 2 * i + 1;
        let mut bytes = get_member_headers(stream, false);
        bytes.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
        if writer.write_all(&bytes).await.is_err() {
            break;
        }
        sent += 1;
        if sent % 1000 == 0 {
            others_are_served(&member.url).await;
        }
    }
    drop(writer);
    let ending = reading.await.expect("reader");
    println!("rapid reset: {sent} streams opened and reset; the connection ended with {ending:?}");
    others_are_served(&member.url).await;
    member.process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_closes_the_connection() {
    let member = member(&[]).await;
    let (reader, mut writer) = raw_connection(&member.url).await.into_split();
    let ending = tokio::spawn(how_it_ends(reader, Duration::from_secs(10)));
    for i in 0..10u64 {
        if writer
            .write_all(&frame(PING, 0, 0, &i.to_be_bytes()))
            .await
            .is_err()
        {
            break;
        }
    }
    let code = ending.await.expect("reader");
    println!("ping flood: the connection ended with {code:?}");
    let scraped = series(&member.admin).await;
    assert!(
        scraped
            .iter()
            .any(|s| s.contains("bookmesh_server_connections_refused_total{reason=\"ping_flood\"}")),
        "the close is counted"
    );
    others_are_served(&member.url).await;
    member.process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_before_any_handler() {
    let member = member(&[]).await;
    let mut client = MemberServiceClient::new(connect(&member.url).await.expect("connect"));
    let mut request = tonic::Request::new(GetMemberRequest {
        member_id: uuid::Uuid::now_v7().to_string(),
    });
    let huge = "x".repeat(64 * 1024);
    request
        .metadata_mut()
        .insert("x-padding", huge.parse().expect("ascii"));
    let status = client.get_member(request).await.expect_err("refused");
    println!("oversized headers: {status:?}");
    assert_ne!(
        status.code(),
        Code::NotFound,
        "the handler must not have seen a 64 KiB header list"
    );
    others_are_served(&member.url).await;
    member.process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_the_slots_come_back() {
    let member = member(&[("BOOKMESH_MAX_CONNECTIONS", "3".into())]).await;
    // Once the readiness probe's connection is gone, three slots are free.
    let admin = member.admin.clone();
    eventually("no connection open", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            series_values(&admin)
                .await
                .contains(&"bookmesh_server_connections 0".to_owned())
                .then_some(())
        }
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(raw_connection(&member.url).await);
    }
    let admin = member.admin.clone();
    eventually("three connections held", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            series_values(&admin)
                .await
                .contains(&"bookmesh_server_connections 3".to_owned())
                .then_some(())
        }
    })
    .await;
    let (reader, _writer) = raw_connection(&member.url).await.into_split();
    assert_eq!(
        how_it_ends(reader, Duration::from_secs(5)).await,
        None,
        "the fourth connection is closed without a word"
    );
    drop(held.pop());
    // The freed slot is taken by an ordinary client once the server saw the close.
    let url = member.url.clone();
    eventually("a freed slot serves again", Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            let mut client = MemberServiceClient::new(connect(&url).await.ok()?);
            let answer = client
                .get_member(GetMemberRequest {
                    member_id: uuid::Uuid::now_v7().to_string(),
                })
                .await;
            matches!(answer, Err(status) if status.code() == Code::NotFound).then_some(())
        }
    })
    .await;
    let scraped = series(&member.admin).await;
    assert!(
        scraped
            .iter()
            .any(|s| s.contains("bookmesh_server_connections_refused_total{reason=\"limit\"}")),
        "refusals are counted"
    );
    drop(held);
    member.process.stop().await;
}
