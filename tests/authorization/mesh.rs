//! The four services on mTLS with their databases, and a channel and token per caller.

use std::collections::HashMap;
use std::time::Duration;

use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::member::v1::RegisterMemberRequest;
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::testing::{
    RunningServer, TestDatabase, TestPki, bind, connect_tls, connect_tls_without_certificate,
    test_token, url_of, wait_until_serving_tls,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

use crate::model::Caller;

pub(crate) struct Mesh {
    pub(crate) pki: TestPki,
    pub(crate) urls: HashMap<&'static str, String>,
    pub(crate) channels: tokio::sync::Mutex<HashMap<(String, Option<String>), Channel>>,
    pub(crate) member_id: String,
    pub(crate) other_member_id: String,
    pub(crate) book_id: String,
    _servers: Vec<RunningServer>,
    _dbs: Vec<TestDatabase>,
}

impl Mesh {
    pub(crate) async fn start() -> Self {
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
    pub(crate) async fn channel(&self, server: &str, workload: Option<&str>) -> Channel {
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

    pub(crate) fn token(&self, caller: Caller) -> String {
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
    pub(crate) async fn as_caller(
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

pub(crate) fn with<T>(message: T, token: &Option<String>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    request
}

pub(crate) fn code<T>(result: Result<T, Status>) -> (Code, Option<String>) {
    match result {
        Ok(_) => (Code::Ok, None),
        Err(status) => {
            let reason = status.get_details_error_info().map(|info| info.reason);
            (status.code(), reason)
        }
    }
}
