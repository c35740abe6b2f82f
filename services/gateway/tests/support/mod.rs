//! The mesh the gateway's tests run against: member, book and rental on their own fresh
//! databases, each with its admin port, and the gateway in front (configured by the test).

// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use bookmesh::config::EventArgs;
use bookmesh::testing::{RunningServer, TestDatabase, bind, url_of};

/// The three services (each with its admin port) and the gateway in front.
pub struct Mesh {
    pub gateway: String,
    pub gateway_server: Option<RunningServer>,
    _servers: Vec<RunningServer>,
    _dbs: Vec<TestDatabase>,
}

pub async fn start(tweak: impl FnOnce(&mut gateway_service::Config)) -> Mesh {
    let dbs = [
        TestDatabase::fresh().await,
        TestDatabase::fresh().await,
        TestDatabase::fresh().await,
    ];
    let (member, book, rental) = (bind().await, bind().await, bind().await);
    let (member_url, book_url, rental_url) = (url_of(&member), url_of(&book), url_of(&rental));
    let events = EventArgs::for_tests(&format!("c{}", uuid::Uuid::now_v7().simple()));
    let admin = |port: u16| Some(format!("127.0.0.1:{port}").parse().expect("address"));
    let ports = [
        bookmesh_mesh_tests::free_port(),
        bookmesh_mesh_tests::free_port(),
        bookmesh_mesh_tests::free_port(),
    ];
    let mut member_config = member_service::Config::for_tests(&dbs[0].url, &rental_url);
    member_config.service.events = events.clone();
    member_config.service.server.admin_listen = admin(ports[0]);
    let mut book_config = book_service::Config::for_tests(&dbs[1].url, &rental_url);
    book_config.service.events = events.clone();
    book_config.service.server.admin_listen = admin(ports[1]);
    let mut rental_config = rental_service::Config::for_tests(&dbs[2].url, &member_url, &book_url);
    rental_config.service.events = events;
    rental_config.service.server.admin_listen = admin(ports[2]);
    let servers = vec![
        RunningServer::start_on(member, |l, s| {
            bookmesh::service::serve_until(member_config, l, s)
        })
        .await,
        RunningServer::start_on(book, |l, s| {
            bookmesh::service::serve_until(book_config, l, s)
        })
        .await,
        RunningServer::start_on(rental, |l, s| {
            bookmesh::service::serve_until(rental_config, l, s)
        })
        .await,
    ];
    let gateway_listener = bind().await;
    let gateway = gateway_listener.local_addr().expect("address").to_string();
    let mut config = gateway_service::Config::for_tests(
        &book_url,
        &member_url,
        &rental_url,
        "http://127.0.0.1:1",
    );
    config.admin_targets = vec![
        format!("member=127.0.0.1:{}", ports[0]),
        format!("book=127.0.0.1:{}", ports[1]),
        format!("rental=127.0.0.1:{}", ports[2]),
    ];
    tweak(&mut config);
    let gateway_server = RunningServer::spawn_on(gateway_listener, |l, s| {
        gateway_service::serve_until(config, l, s)
    });
    Mesh {
        gateway,
        gateway_server: Some(gateway_server),
        _servers: servers,
        _dbs: dbs.into(),
    }
}
