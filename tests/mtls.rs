//! mTLS on every hop, with workload identities: the real services serve TLS only, call each
//! other over mTLS checking the callee's SPIFFE ID, refuse certificates that are expired or
//! from another authority, and pick up rotated certificate files without a restart.

use std::path::Path;
use std::time::Duration;

use bookmesh::identity::pki::Authority;
use bookmesh::identity::{CredentialFiles, Credentials, SpiffeId};
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::RegisterMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::rental::v1::RentBookRequest;
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::testing::{
    NAMESPACE, RunningServer, TRUST_DOMAIN, TestDatabase, TestPki, bind, connect, connect_tls,
    eventually, url_of, wait_until_serving_tls,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const READY: Duration = Duration::from_secs(30);

/// Whether a health check over this channel is answered.
async fn answers(channel: Result<tonic::transport::Channel, tonic::transport::Error>) -> bool {
    let Ok(channel) = channel else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok()
}

/// Writes `issued` as a workload's credentials under `dir` (trusting `authorities`).
fn write_credentials(
    dir: &Path,
    name: &str,
    certificate: &str,
    key: &str,
    authorities: &str,
) -> CredentialFiles {
    std::fs::create_dir_all(dir).expect("dir");
    let files = CredentialFiles {
        certificate: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        authorities: dir.join(format!("{name}-ca.crt")),
    };
    std::fs::write(&files.certificate, certificate).expect("write");
    std::fs::write(&files.key, key).expect("write");
    std::fs::write(&files.authorities, authorities).expect("write");
    files
}

fn id(workload: &str) -> SpiffeId {
    SpiffeId::new(TRUST_DOMAIN, NAMESPACE, workload)
}

async fn member_server(pki: &TestPki) -> (RunningServer, TestDatabase) {
    let db = TestDatabase::fresh().await;
    let mut config = member_service::Config::for_database(&db.url);
    config.service.identity = pki.identity_args();
    let server = RunningServer::spawn(|listener, shutdown| {
        bookmesh::service::serve_until(config, listener, shutdown)
    })
    .await;
    wait_until_serving_tls(&server.url(), &pki.credentials("check"), "member", READY).await;
    (server, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_runs_on_mtls_and_a_plaintext_caller_is_refused() {
    let pki = TestPki::new();
    let (member, book, rental) = (bind().await, bind().await, bind().await);
    let (member_url, book_url, rental_url) = (url_of(&member), url_of(&book), url_of(&rental));
    let dbs = [
        TestDatabase::fresh().await,
        TestDatabase::fresh().await,
        TestDatabase::fresh().await,
    ];
    let mut member_config = member_service::Config::for_tests(&dbs[0].url, &rental_url);
    member_config.service.identity = pki.identity_args();
    let mut book_config = book_service::Config::for_tests(&dbs[1].url, &rental_url);
    book_config.service.identity = pki.identity_args();
    let mut rental_config = rental_service::Config::for_tests(&dbs[2].url, &member_url, &book_url);
    rental_config.service.identity = pki.identity_args();
    let _servers = [
        RunningServer::spawn_on(member, |listener, shutdown| {
            bookmesh::service::serve_until(member_config, listener, shutdown)
        }),
        RunningServer::spawn_on(book, |listener, shutdown| {
            bookmesh::service::serve_until(book_config, listener, shutdown)
        }),
        RunningServer::spawn_on(rental, |listener, shutdown| {
            bookmesh::service::serve_until(rental_config, listener, shutdown)
        }),
    ];
    let caller = pki.credentials("loadgen");
    for (url, workload) in [
        (&member_url, "member"),
        (&book_url, "book"),
        (&rental_url, "rental"),
    ] {
        wait_until_serving_tls(url, &caller, workload, READY).await;
        assert!(
            !answers(connect(url).await).await,
            "{workload} answered a plaintext call"
        );
    }

    // A rental makes rental call member and book: over mTLS, each checked by its identity.
    let member_id = MemberServiceClient::new(
        connect_tls(&member_url, &caller, "member")
            .await
            .expect("member"),
    )
    .register_member(RegisterMemberRequest {
        name: "Ada".into(),
        email: format!("ada-{}@example.org", uuid::Uuid::now_v7()),
    })
    .await
    .expect("register member")
    .into_inner()
    .member
    .expect("member")
    .member_id;
    let book_id =
        BookServiceClient::new(connect_tls(&book_url, &caller, "book").await.expect("book"))
            .register_book(bookmesh::testing::a_book("Dune"))
            .await
            .expect("register book")
            .into_inner()
            .book
            .expect("book")
            .book_id;
    let card = RentalServiceClient::new(
        connect_tls(&rental_url, &caller, "rental")
            .await
            .expect("rental"),
    )
    .rent_book(RentBookRequest {
        member_id: member_id.clone(),
        book_id,
    })
    .await
    .expect("rental over mTLS")
    .into_inner()
    .rental_card
    .expect("card");
    assert_eq!(card.member_id, member_id);
    assert_eq!(card.rented_items.len(), 1);
}

#[tokio::test]
async fn a_server_that_is_not_the_expected_workload_is_refused_by_its_caller() {
    let pki = TestPki::new();
    let (member, _db) = member_server(&pki).await;
    let caller = pki.credentials("rental");
    assert!(answers(connect_tls(&member.url(), &caller, "member").await).await);
    assert!(
        !answers(connect_tls(&member.url(), &caller, "book").await).await,
        "a caller expecting book accepted member"
    );
}

#[tokio::test]
async fn an_expired_certificate_or_one_from_another_authority_is_refused() {
    let pki = TestPki::new();
    let (member, _db) = member_server(&pki).await;
    let scratch = tempfile::tempdir().expect("dir");
    let ca = std::fs::read_to_string(pki.dir().join("ca.crt")).expect("ca");

    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .authority()
        .issue(
            &id("rental"),
            now - time::Duration::days(3),
            time::Duration::days(1),
        )
        .expect("issue");
    let files = write_credentials(
        scratch.path(),
        "expired",
        &expired.certificate_pem,
        &expired.key_pem,
        &ca,
    );
    let expired = Credentials::load(id("rental"), files).expect("load");
    assert!(
        !answers(connect_tls(&member.url(), &expired, "member").await).await,
        "an expired client certificate was accepted"
    );

    let other = Authority::generate(TRUST_DOMAIN).expect("another authority");
    let foreign = other
        .issue(&id("rental"), now, time::Duration::days(1))
        .expect("issue");
    // It trusts the real authority (so it would accept member), but its own certificate is
    // signed by another.
    let files = write_credentials(
        scratch.path(),
        "foreign",
        &foreign.certificate_pem,
        &foreign.key_pem,
        &ca,
    );
    let foreign = Credentials::load(id("rental"), files).expect("load");
    assert!(
        !answers(connect_tls(&member.url(), &foreign, "member").await).await,
        "a certificate from another authority was accepted"
    );
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let pki = TestPki::new();
    let (member, _db) = member_server(&pki).await;
    let scratch = tempfile::tempdir().expect("dir");
    let now = time::OffsetDateTime::now_utc();

    // A caller that trusts only a new authority cannot reach the server yet.
    let next = Authority::generate(TRUST_DOMAIN).expect("next authority");
    let caller = next
        .issue(&id("rental"), now, time::Duration::days(1))
        .expect("issue");
    let files = write_credentials(
        scratch.path(),
        "rental",
        &caller.certificate_pem,
        &caller.key_pem,
        next.certificate_pem(),
    );
    let caller = Credentials::load(id("rental"), files).expect("load");
    assert!(!answers(connect_tls(&member.url(), &caller, "member").await).await);

    // Rotate the server's files in place, as cert-manager does: a certificate from the new
    // authority, and both authorities trusted while callers move over.
    let rotated = next
        .issue(&id("member"), now, time::Duration::days(1))
        .expect("issue");
    let old_ca = std::fs::read_to_string(pki.dir().join("ca.crt")).expect("ca");
    std::fs::write(pki.dir().join("member.key"), &rotated.key_pem).expect("key");
    std::fs::write(pki.dir().join("member.crt"), &rotated.certificate_pem).expect("cert");
    std::fs::write(
        pki.dir().join("ca.crt"),
        format!("{old_ca}{}", next.certificate_pem()),
    )
    .expect("bundle");

    let url = member.url();
    eventually(
        "member serves the rotated certificate",
        Duration::from_secs(10),
        || async {
            answers(connect_tls(&url, &caller, "member").await)
                .await
                .then_some(())
        },
    )
    .await;
}
