//! TLS to the databases: the services' pool speaks it when the URL asks (`sslmode=require` or
//! `verify-full` for PostgreSQL, `ssl-mode=VERIFY_IDENTITY` for MariaDB), which the production
//! overlay does. Proven on the local PostgreSQL (`BOOKMESH_TEST_DB=postgres`, which serves
//! TLS with its own certificate); this machine's MariaDB has TLS disabled.

use bookmesh::testing::{Engine, TestDatabase};
use sea_orm::{ConnectionTrait, Statement};

#[tokio::test]
async fn a_service_pool_speaks_tls_to_postgresql_and_checks_the_server() {
    if Engine::from_env() != Engine::Postgres {
        eprintln!("skipped: run with BOOKMESH_TEST_DB=postgres (make test-db)");
        return;
    }
    let database = TestDatabase::fresh().await;
    let pool = bookmesh::db::connect_lazy(&format!("{}?sslmode=require", database.url))
        .await
        .expect("pool");
    let row = pool
        .query_one_raw(Statement::from_string(
            pool.get_database_backend(),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ))
        .await
        .expect("query")
        .expect("a row");
    let encrypted: bool = row.try_get("", "ssl").expect("ssl column");
    assert!(encrypted, "the connection is encrypted");

    // verify-full checks the server's certificate: the local server's own (self-signed)
    // certificate is not trusted, so the pool refuses it.
    let checked = bookmesh::db::connect_lazy(&format!("{}?sslmode=verify-full", database.url))
        .await
        .expect("pool");
    let refused = checked.ping().await;
    assert!(
        refused.is_err(),
        "an untrusted server certificate was accepted"
    );
}
