//! Least privilege at the databases: each service connects as its own role, never as the
//! database's superuser, and that role owns only its service's database (the notification
//! service's Redis: its own user, limited to its keys and to commands that administer
//! nothing). The PostgreSQL init script the manifests ship is run against the local server to
//! prove the service migrates and serves as that role.

use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::MigratorTrait;

use crate::helpers::{OVERLAYS, cluster, container_env, kind, services, workloads};

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn every_service_connects_as_its_own_role_not_the_superuser() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let mut checked = 0;
        for database in workloads(&objects)
            .into_iter()
            .filter(|w| w.component() == "database")
        {
            let id = format!("{overlay}: {}", database.id());
            let env = container_env(&objects, &database.containers()[0], "pod-0");
            let (superuser, service_user) = if env.contains_key("REDIS_ADMIN_PASSWORD") {
                // Redis: the administrator is the `default` user (requirepass); the service's
                // user is declared with `--user`.
                (
                    "default".to_owned(),
                    env.get("SERVICE_USER").cloned().expect("SERVICE_USER"),
                )
            } else if env.contains_key("POSTGRES_PASSWORD") {
                (
                    env.get("POSTGRES_USER")
                        .cloned()
                        .unwrap_or_else(|| "postgres".into()),
                    env.get("SERVICE_USER").cloned().expect("SERVICE_USER"),
                )
            } else {
                (
                    "root".to_owned(),
                    env.get("MARIADB_USER").cloned().expect("MARIADB_USER"),
                )
            };
            // The service whose URL names this database's host, or (production) whose URL is
            // in this database's Secret: `bestbook-db` must not pass for `book-db`.
            let host = database.name.clone();
            let service = services(&objects)
                .into_iter()
                .find(|s| {
                    let env = container_env(&objects, &s.containers()[0], "pod-0");
                    // The notification service's store is Redis, by its own variable.
                    let url = env
                        .get("BOOKMESH_DATABASE_URL")
                        .or_else(|| env.get("BOOKMESH_REDIS_URL"));
                    url.is_some_and(|url| {
                        url.contains(&format!("@{host}."))
                            || url.starts_with(&format!("<{host}-credentials/"))
                    })
                })
                .unwrap_or_else(|| panic!("{id}: no service uses it"));
            let service_env = container_env(&objects, &service.containers()[0], "pod-0");
            let url = service_env
                .get("BOOKMESH_DATABASE_URL")
                .or_else(|| service_env.get("BOOKMESH_REDIS_URL"))
                .cloned()
                .expect("the URL found above");
            if env.contains_key("REDIS_ADMIN_PASSWORD") {
                redis_keeps_the_service_to_its_keys(&id, &database.containers()[0], &service_env);
            }
            if url.starts_with('<') {
                // Production keeps the URL outside git; the Secret's keys still name the role.
                assert_ne!(
                    service_user, superuser,
                    "{id}: the service's role is not the superuser"
                );
            } else {
                let user = url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.split_once(':'))
                    .map(|(user, _)| user.to_owned())
                    .expect("a user in the URL");
                assert_eq!(
                    user,
                    service_user,
                    "{id}: {} connects as its own role",
                    service.id()
                );
                assert_ne!(
                    user,
                    superuser,
                    "{id}: {} connects as the superuser",
                    service.id()
                );
            }
            checked += 1;
        }
        assert_eq!(
            checked, 5,
            "{overlay}: four SQL databases and the notification service's Redis"
        );
    }
}

/// The service's own Redis user, as the StatefulSet's arguments declare it (`--user
/// $(SERVICE_USER) on >$(SERVICE_PASSWORD) ~<prefix>* ... +@all -@admin -@dangerous`): it may
/// touch only the keys under the prefix the service writes (BOOKMESH_REDIS_PREFIX) and no
/// command that administers the server or reaches every key (CONFIG, FLUSHALL, KEYS, ...); the
/// administrator has a password (requirepass); and the notices are durable (the append-only
/// file), since nothing could rebuild them.
fn redis_keeps_the_service_to_its_keys(
    id: &str,
    container: &serde_json::Value,
    service_env: &std::collections::BTreeMap<String, String>,
) {
    let args: Vec<&str> = container["args"]
        .as_array()
        .map(|args| args.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    // The words after an option, up to the next option.
    let option = |name: &str| {
        args.iter()
            .position(|arg| *arg == name)
            .map(|at| {
                args[at + 1..]
                    .iter()
                    .take_while(|arg| !arg.starts_with("--"))
                    .copied()
                    .collect::<Vec<&str>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        option("--requirepass"),
        ["$(REDIS_ADMIN_PASSWORD)"],
        "{id}: the administrator's password comes from the Secret"
    );
    assert_eq!(
        option("--appendonly"),
        ["yes"],
        "{id}: notices are written to the append-only file"
    );
    let rules = option("--user");
    assert_eq!(
        rules.first().copied(),
        Some("$(SERVICE_USER)"),
        "{id}: --user declares the service's own user: {rules:?}"
    );
    assert!(
        rules.contains(&"on") && rules.contains(&">$(SERVICE_PASSWORD)"),
        "{id}: the service's user is on, with the Secret's password: {rules:?}"
    );
    let prefix = service_env
        .get("BOOKMESH_REDIS_PREFIX")
        .unwrap_or_else(|| panic!("{id}: its service sets BOOKMESH_REDIS_PREFIX"));
    let patterns: Vec<&str> = rules
        .iter()
        .filter(|rule| rule.starts_with('~') || rule.starts_with('%'))
        .copied()
        .collect();
    assert_eq!(
        patterns,
        [format!("~{prefix}*").as_str()],
        "{id}: the service's user reaches only the keys under its prefix"
    );
    assert!(
        !rules
            .iter()
            .any(|rule| matches!(*rule, "allkeys" | "nopass")),
        "{id}: the service's user: {rules:?}"
    );
    let position = |rule: &str| rules.iter().position(|r| *r == rule);
    for denied in ["-@admin", "-@dangerous"] {
        assert!(
            position(denied).is_some_and(|at| position("+@all").is_none_or(|all| all < at)),
            "{id}: the service's user may not run {denied} commands: {rules:?}"
        );
    }
}

struct MemberTables;

impl MigratorTrait for MemberTables {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        member_service::store::migration::Migrator::migrations()
    }
}

#[tokio::test]
#[ignore = "needs the rendered manifests and the local PostgreSQL: make check-k8s"]
async fn the_postgresql_init_script_gives_the_service_a_role_that_owns_only_its_database() {
    let objects = cluster("kind");
    let script = objects
        .iter()
        .find(|o| {
            kind(o) == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("postgres-init"))
        })
        .and_then(|map| map["data"]["create-service-role.sh"].as_str())
        .expect("the init script")
        .to_owned();
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let (role, database) = (format!("bmrole_{suffix}"), format!("bmtest_{suffix}"));
    let path = std::env::temp_dir().join(format!("create-service-role-{suffix}.sh"));
    std::fs::write(&path, script).expect("write");
    // As the image runs it: psql as the superuser, the service's names in the environment.
    let ran = tokio::process::Command::new("sh")
        .arg(&path)
        .env("POSTGRES_USER", "postgres")
        .env("PGHOST", "127.0.0.1")
        .env("SERVICE_USER", &role)
        .env("SERVICE_PASSWORD", "kind-only")
        .env("SERVICE_DATABASE", &database)
        .output()
        .await
        .expect("sh");
    let _ = std::fs::remove_file(&path);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );

    let url = format!("postgres://{role}:kind-only@127.0.0.1:5432/{database}");
    let pool = bookmesh::db::connect_lazy(&url).await.expect("pool");
    bookmesh::db::migrate::<MemberTables>(&pool)
        .await
        .expect("the service migrates its schema as its own role");
    let superuser = pool
        .query_one_raw(Statement::from_string(
            pool.get_database_backend(),
            "SELECT rolsuper::text AS superuser FROM pg_roles WHERE rolname = current_user",
        ))
        .await
        .expect("query")
        .expect("a row")
        .try_get::<String>("", "superuser")
        .expect("column");
    assert_eq!(superuser, "false", "the service's role is not a superuser");
    let create = pool
        .execute_unprepared(&format!("CREATE DATABASE {database}_more"))
        .await;
    assert!(
        create.is_err(),
        "the service's role may not create databases"
    );
    pool.close().await.expect("close");

    let admin = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("admin");
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await
        .expect("drop database");
    admin
        .execute_unprepared(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .expect("drop role");
}
