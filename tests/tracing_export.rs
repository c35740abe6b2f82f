//! One RentBook is one trace: a test OTLP receiver (the OTLP trace service, from the
//! opentelemetry-proto crate) takes the real exports of the four service processes, and the
//! spans of the trace cover rental → member, rental → book, the outbox relay and the consumers
//! in book, member, rental and bestbook, each with the right parent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::RegisterMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::rental::v1::RentBookRequest;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::testing::{connect, eventually, wait_until_serving};
use bookmesh_mesh_tests::{ServiceProcess, free_port};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// A received span, flattened.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().expect("spans");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(Received {
                        service: service.clone(),
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// A test OTLP receiver: what it received, and its URL.
async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (receiver, otlp)
}

/// The spans of `trace_id`, once every `expected` (service, kind, name part) arrived.
async fn spans_of(
    receiver: &Receiver,
    trace_id: &str,
    expected: &[(&str, i32, &str)],
) -> Vec<Received> {
    eventually("the trace's spans", Duration::from_secs(30), || {
        let receiver = receiver.clone();
        async move {
            let spans: Vec<Received> = receiver
                .0
                .lock()
                .expect("spans")
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            expected
                .iter()
                .all(|(service, kind, name)| {
                    spans
                        .iter()
                        .any(|s| s.service == *service && s.kind == *kind && s.name.contains(name))
                })
                .then_some(spans)
        }
    })
    .await
}

fn find(spans: &[Received], service: &str, kind: i32, name: &str) -> Received {
    spans
        .iter()
        .find(|s| s.service == service && s.kind == kind && s.name.contains(name))
        .cloned()
        .unwrap_or_else(|| panic!("no {service} span {name:?} (kind {kind}) in {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rent_book_is_one_trace_across_calls_relay_and_consumers() {
    let (receiver, otlp) = start_receiver().await;

    let dir = std::env::temp_dir().join(format!("bookmesh-otlp-{}", uuid::Uuid::now_v7()));
    let address = || format!("127.0.0.1:{}", free_port());
    let (book, member, rental, bestbook) = (address(), address(), address(), address());
    let start = |name: &str, listen: &str| {
        ServiceProcess::spawn(
            name,
            &format!("{name}-service"),
            &[
                ("BOOKMESH_LISTEN", listen.to_owned()),
                ("BOOKMESH_DATA_DIR", dir.join(name).display().to_string()),
                ("BOOKMESH_RENTAL_ENDPOINTS", format!("http://{rental}")),
                ("BOOKMESH_MEMBER_ENDPOINTS", format!("http://{member}")),
                ("BOOKMESH_BOOK_ENDPOINTS", format!("http://{book}")),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ],
        )
    };
    let processes = [
        start("book", &book),
        start("member", &member),
        start("rental", &rental),
        start("bestbook", &bestbook),
    ];
    for address in [&book, &member, &rental, &bestbook] {
        wait_until_serving(&format!("http://{address}"), Duration::from_secs(60)).await;
    }
    let member_id =
        MemberServiceClient::new(connect(&format!("http://{member}")).await.expect("member"))
            .register_member(RegisterMemberRequest {
                name: "Traced".into(),
                email: "traced@example.org".into(),
            })
            .await
            .expect("register")
            .into_inner()
            .member
            .expect("member")
            .member_id;
    let book_id = BookServiceClient::new(connect(&format!("http://{book}")).await.expect("book"))
        .register_book(bookmesh::testing::a_book("Traced"))
        .await
        .expect("register book")
        .into_inner()
        .book
        .expect("book")
        .book_id;

    // The test is the root of the trace.
    let (trace_id, root_span) = ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174");
    let mut request = tonic::Request::new(RentBookRequest { member_id, book_id });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{root_span}-01")
            .parse()
            .expect("ascii"),
    );
    RentalServiceClient::new(connect(&format!("http://{rental}")).await.expect("rental"))
        .rent_book(request)
        .await
        .expect("rent");

    // Every span the trace must have; exports arrive in batches, so wait until all are in.
    let expected: [(&str, i32, &str); 10] = [
        ("rental", SERVER, "RentalService/RentBook"),
        ("rental", CLIENT, "member/GetMember"),
        ("rental", CLIENT, "book/GetBook"),
        ("member", SERVER, "MemberService/GetMember"),
        ("book", SERVER, "BookService/GetBook"),
        ("rental", PRODUCER, "rental publish"),
        ("book", CONSUMER, "ItemRented process"),
        ("member", CONSUMER, "ItemRented process"),
        ("rental", CONSUMER, "BookReserved process"),
        ("bestbook", CONSUMER, "RentConfirmed process"),
    ];
    let spans = spans_of(&receiver, trace_id, &expected).await;
    let find = |service: &str, kind: i32, name: &str| find(&spans, service, kind, name);
    let rent = find("rental", SERVER, "RentalService/RentBook");
    assert_eq!(rent.parent, root_span, "continues the caller's span");
    let get_member = find("rental", CLIENT, "member/GetMember");
    let get_book = find("rental", CLIENT, "book/GetBook");
    assert_eq!(get_member.parent, rent.span_id);
    assert_eq!(get_book.parent, rent.span_id);
    assert_eq!(
        find("member", SERVER, "MemberService/GetMember").parent,
        get_member.span_id
    );
    assert_eq!(
        find("book", SERVER, "BookService/GetBook").parent,
        get_book.span_id
    );
    let relay = find("rental", PRODUCER, "rental publish");
    assert_eq!(
        relay.parent, rent.span_id,
        "the relay publishes in the producing span's trace"
    );
    let book_consumes = find("book", CONSUMER, "ItemRented process");
    assert_eq!(book_consumes.parent, rent.span_id);
    assert_eq!(
        find("member", CONSUMER, "ItemRented process").parent,
        rent.span_id
    );
    let rental_consumes = find("rental", CONSUMER, "BookReserved process");
    assert_eq!(
        rental_consumes.parent, book_consumes.span_id,
        "BookReserved came from book's step"
    );
    assert_eq!(
        find("bestbook", CONSUMER, "RentConfirmed process").parent,
        rental_consumes.span_id,
        "RentConfirmed came from rental's step"
    );
    println!("one trace, {} spans across the mesh", spans.len());

    for process in processes {
        process.stop().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A browser's call through the gateway continues the browser's `traceparent`: the gateway's
/// server span is its child, the gateway's call to the service a child of that, and the
/// service's span a child of the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_the_gateway_continues_the_browsers_trace() {
    let (receiver, otlp) = start_receiver().await;
    let dir = std::env::temp_dir().join(format!("bookmesh-otlp-{}", uuid::Uuid::now_v7()));
    let (book, gateway) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let env = |listen: &str| {
        vec![
            ("BOOKMESH_LISTEN", listen.to_owned()),
            ("BOOKMESH_DATA_DIR", dir.join("book").display().to_string()),
            ("BOOKMESH_BOOK_ENDPOINTS", format!("http://{book}")),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ]
    };
    let book_process = ServiceProcess::spawn("book", "book-service", &env(&book));
    let gateway_process = ServiceProcess::spawn("gateway", "gateway-service", &env(&gateway));
    wait_until_serving(&format!("http://{book}"), Duration::from_secs(60)).await;
    eventually("the gateway answers", Duration::from_secs(60), || {
        let gateway = gateway.clone();
        async move {
            bookmesh_mesh_tests::http_request(&gateway, "GET", "/healthz", &[], "")
                .await
                .ok()
                .filter(|(status, _)| *status == 200)
        }
    })
    .await;

    let (trace_id, browser_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let traceparent = format!("00-{trace_id}-{browser_span}-01");
    let (status, body) = bookmesh_mesh_tests::http_request(
        &gateway,
        "POST",
        "/bookmesh.book.v1.BookService/ListBooks",
        &[
            ("content-type", "application/json"),
            ("traceparent", &traceparent),
        ],
        "{}",
    )
    .await
    .expect("call");
    assert_eq!(status, 200, "{body}");

    let expected = [
        ("gateway", SERVER, "bookmesh.book.v1.BookService/ListBooks"),
        ("gateway", CLIENT, "book/ListBooks"),
        ("book", SERVER, "BookService/ListBooks"),
    ];
    let spans = spans_of(&receiver, trace_id, &expected).await;
    let edge = find(&spans, "gateway", SERVER, "BookService/ListBooks");
    assert_eq!(edge.parent, browser_span, "continues the browser's span");
    let call = find(&spans, "gateway", CLIENT, "book/ListBooks");
    assert_eq!(call.parent, edge.span_id);
    assert_eq!(
        find(&spans, "book", SERVER, "BookService/ListBooks").parent,
        call.span_id
    );
    gateway_process.stop().await;
    book_process.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
