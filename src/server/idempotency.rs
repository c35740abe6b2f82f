//! Idempotency keys: a client that retries a write after losing its answer (a timeout, a
//! dropped connection) gets the first answer again, and nothing is applied twice.
//!
//! A mutating call may carry `idempotency-key: <client-chosen string>` in its metadata. The
//! first call with a key runs and its answer (message or status) is stored in the service's
//! own database, scoped to the method and the caller; a repeat with the same key and the same
//! request gets the stored answer without reaching the handler. A repeat while the first is
//! still running is ABORTED (retry shortly); the same key with a different request is
//! INVALID_ARGUMENT. Answers that say "try again" (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED,
//! RESOURCE_EXHAUSTED, INTERNAL…) are not stored: the retry runs. Keys expire after
//! `--idempotency-key-ttl` and are pruned with the other tables.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Full, Limited};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::{Code, Status};

/// The metadata entry a client names its write with.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Longest key accepted.
const MAX_KEY_LEN: usize = 200;

/// The `idempotency_keys` table.
pub(crate) mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub(crate) struct Model {
        /// A hash of method, caller and key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        /// A hash of the request message: the same key with another request is refused.
        pub fingerprint: String,
        /// `running` until the first call answers, then `done`.
        pub state: String,
        pub code: i32,
        pub message: String,
        pub details: Vec<u8>,
        /// The answer's encoded gRPC message frames (OK answers).
        pub body: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

const RUNNING: &str = "running";
const DONE: &str = "done";

/// Which calls honour keys, and where their answers are kept.
#[derive(Clone)]
pub struct IdempotencyLayer {
    db: DatabaseConnection,
    /// Method names (`RentBook`) that honour a key; others ignore it.
    methods: Arc<[&'static str]>,
    /// A running call older than this is taken as crashed: a repeat runs again.
    running_expiry: Duration,
    max_message_bytes: usize,
}

/// The service [`IdempotencyLayer`] makes.
#[derive(Clone)]
pub struct Idempotent<S> {
    inner: S,
    layer: IdempotencyLayer,
}

impl IdempotencyLayer {
    /// Keys for `methods`, kept in `db`. `running_expiry` should exceed the request timeout.
    pub fn new(
        db: DatabaseConnection,
        methods: &[&'static str],
        running_expiry: Duration,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            db,
            methods: methods.into(),
            running_expiry,
            max_message_bytes,
        }
    }
}

impl<S> tower::Layer<S> for IdempotencyLayer {
    type Service = Idempotent<S>;

    fn layer(&self, inner: S) -> Idempotent<S> {
        Idempotent {
            inner,
            layer: self.clone(),
        }
    }
}

impl<S> tower::Service<http::Request<Body>> for Idempotent<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = super::response::rpc_method(request.uri().path());
        let key = request
            .headers()
            .get(IDEMPOTENCY_KEY_HEADER)
            .map(|value| value.to_str().map(str::to_owned));
        let (Some(key), true) = (key, self.layer.methods.contains(&method)) else {
            return Box::pin(self.inner.call(request));
        };
        let method = method.to_owned();
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            Ok(match key {
                Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => layer
                    .serve(inner, request, &method, &key)
                    .await
                    .unwrap_or_else(Status::into_http),
                _ => invalid_key().into_http(),
            })
        })
    }
}

fn invalid_key() -> Status {
    let mut violations = crate::status::FieldViolations::new();
    violations.add(
        IDEMPOTENCY_KEY_HEADER,
        format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
    );
    violations
        .into_result()
        .err()
        .unwrap_or_else(|| Status::invalid_argument("bad idempotency key"))
}

impl IdempotencyLayer {
    async fn serve<S>(
        &self,
        mut inner: S,
        request: http::Request<Body>,
        method: &str,
        key: &str,
    ) -> Result<http::Response<Body>, Status>
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    {
        let (parts, body) = request.into_parts();
        // Bounded like the handler's own decoding: the frame header and the message.
        let bytes = Limited::new(body, self.max_message_bytes + 5)
            .collect()
            .await
            .map_err(|_| Status::resource_exhausted("request larger than the message limit"))?
            .to_bytes();
        let caller = caller_of(&parts);
        let scope = format!(
            "{:016x}{:016x}",
            fnv1a(method.as_bytes()),
            fnv1a(format!("{caller}\u{0}{key}").as_bytes())
        );
        let fingerprint = format!("{:016x}", fnv1a(&bytes));
        let db_error = |error: sea_orm::DbErr| crate::status::database_error(&error);

        // Claim the key; the unique scope decides between concurrent repeats.
        let now = crate::db::now();
        // A plain insert, the duplicate told by the unique violation: an upsert's affected
        // rows cannot tell on MariaDB (sqlx counts found rows there).
        let claimed = match entity::Entity::insert(entity::ActiveModel {
            scope: Set(scope.clone()),
            fingerprint: Set(fingerprint.clone()),
            state: Set(RUNNING.into()),
            code: Set(0),
            message: Set(String::new()),
            details: Set(Vec::new()),
            body: Set(Vec::new()),
            created_at: Set(now),
        })
        .exec_without_returning(&self.db)
        .await
        {
            Ok(_) => true,
            Err(error)
                if matches!(
                    error.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                ) =>
            {
                false
            }
            Err(error) => return Err(db_error(error)),
        };
        if !claimed {
            let Some(stored) = entity::Entity::find_by_id(scope.clone())
                .one(&self.db)
                .await
                .map_err(db_error)?
            else {
                return Err(Status::aborted(
                    "a request with this idempotency key just finished; retry",
                ));
            };
            if stored.fingerprint != fingerprint {
                let mut violations = crate::status::FieldViolations::new();
                violations.add(
                    IDEMPOTENCY_KEY_HEADER,
                    "was used with another request; use a new key for a new request",
                );
                violations.into_result()?;
            }
            if stored.state == DONE {
                tracing::debug!(%method, "idempotent repeat answered from the stored answer");
                return Ok(replay(&stored));
            }
            if !self.crashed(&stored, now) {
                return Err(Status::aborted(
                    "a request with this idempotency key is still running; retry shortly",
                ));
            }
            // The first call's process died while running it: this one takes over.
            let taken = entity::Entity::update_many()
                .col_expr(entity::Column::CreatedAt, Expr::value(now))
                .filter(entity::Column::Scope.eq(scope.clone()))
                .filter(entity::Column::CreatedAt.eq(stored.created_at))
                .exec(&self.db)
                .await
                .map_err(db_error)?;
            if taken.rows_affected == 0 {
                return Err(Status::aborted(
                    "a request with this idempotency key is still running; retry shortly",
                ));
            }
        }

        let request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
        let Ok(response) = inner.call(request).await;
        let (parts, body) = response.into_parts();
        let collected = match body.collect().await {
            Ok(collected) => collected,
            Err(status) => {
                self.release(&scope).await;
                return Err(status);
            }
        };
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        let status_of = |map: &http::HeaderMap| Status::from_header_map(map);
        let status = trailers
            .as_ref()
            .and_then(status_of)
            .or_else(|| status_of(&parts.headers));
        let code = status.as_ref().map_or(Code::Ok, Status::code);
        if worth_repeating(code) {
            self.release(&scope).await;
        } else {
            let stored = entity::Entity::update_many()
                .col_expr(entity::Column::State, Expr::value(DONE))
                .col_expr(entity::Column::Code, Expr::value(code as i32))
                .col_expr(
                    entity::Column::Message,
                    Expr::value(
                        status
                            .as_ref()
                            .map(|s| s.message().to_owned())
                            .unwrap_or_default(),
                    ),
                )
                .col_expr(
                    entity::Column::Details,
                    Expr::value(
                        status
                            .as_ref()
                            .map(|s| s.details().to_vec())
                            .unwrap_or_default(),
                    ),
                )
                .col_expr(entity::Column::Body, Expr::value(data.to_vec()))
                .filter(entity::Column::Scope.eq(scope.clone()))
                .exec(&self.db)
                .await;
            if let Err(error) = stored {
                // The answer still goes out; a repeat will run again (and meet the rules).
                tracing::warn!(%error, %method, "could not store the idempotent answer");
                self.release(&scope).await;
            }
        }
        Ok(rebuild(parts, data, trailers))
    }

    fn crashed(&self, stored: &entity::Model, now: DateTime<Utc>) -> bool {
        chrono::Duration::from_std(self.running_expiry)
            .is_ok_and(|expiry| stored.created_at + expiry < now)
    }

    /// Forgets a key whose call should run again when repeated.
    async fn release(&self, scope: &str) {
        if let Err(error) = entity::Entity::delete_by_id(scope.to_owned())
            .exec(&self.db)
            .await
        {
            tracing::warn!(%error, "could not release an idempotency key");
        }
    }
}

/// Answers a retry can change: not stored, so the retry runs.
fn worth_repeating(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
            | Code::DataLoss
    )
}

/// Who a key belongs to: the user (token subject) and the workload (certificate), so one
/// caller's key never answers another's request.
fn caller_of(parts: &http::request::Parts) -> String {
    let user = crate::auth::current_user()
        .map(|u| u.to_string())
        .unwrap_or_default();
    let workload = parts
        .extensions
        .get::<crate::identity::transport::PeerInfo>()
        .and_then(|peer| peer.workload.as_ref())
        .map(|id| id.to_string())
        .unwrap_or_default();
    format!("{user}\u{0}{workload}")
}

/// The stored answer, as the first call got it.
fn replay(stored: &entity::Model) -> http::Response<Body> {
    if stored.code != 0 {
        let status = Status::with_details(
            Code::from_i32(stored.code),
            stored.message.clone(),
            Bytes::from(stored.details.clone()),
        );
        return status.into_http();
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let mut response = http::Response::new(Body::new(
        Full::new(Bytes::from(stored.body.clone()))
            .map_err(|never| match never {})
            .with_trailers(async move { Some(Ok(trailers)) }),
    ));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The response again, from its collected parts.
fn rebuild(
    parts: http::response::Parts,
    data: Bytes,
    trailers: Option<http::HeaderMap>,
) -> http::Response<Body> {
    let body = Full::new(data).map_err(|never| match never {});
    let body = match trailers {
        Some(trailers) => Body::new(body.with_trailers(async move { Some(Ok(trailers)) })),
        None => Body::new(body),
    };
    http::Response::from_parts(parts, body)
}

/// FNV-1a, 64 bits: stable across processes and versions (unlike std's hasher), which stored
/// scopes and fingerprints need. Not a defence against a chosen collision: the scope includes
/// the caller, so a collision can only confuse a caller's own keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use sea_orm_migration::{MigrationTrait, SchemaManager};

    use super::*;

    /// A handler that counts its calls and answers only when the test lets it.
    fn gated_handler(
        calls: Arc<AtomicUsize>,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> impl tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |_request: http::Request<Body>| {
            let (calls, gate) = (calls.clone(), gate.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _permit = gate.acquire().await;
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let body = Full::new(Bytes::from_static(b"the first answer"))
                    .map_err(|never| match never {})
                    .with_trailers(async move { Some(Ok(trailers)) });
                Ok::<_, Infallible>(http::Response::new(Body::new(body)))
            }
        })
    }

    fn keyed_rent() -> http::Request<Body> {
        let mut request = http::Request::new(Body::new(
            Full::new(Bytes::from_static(b"rent this")).map_err(|never| match never {}),
        ));
        *request.uri_mut() = http::Uri::from_static("/bookmesh.rental.v1.RentalService/RentBook");
        request.headers_mut().insert(
            IDEMPOTENCY_KEY_HEADER,
            http::HeaderValue::from_static("k-1"),
        );
        request
    }

    async fn answer(response: http::Response<Body>) -> (Code, Bytes) {
        let code = Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (code, body)
    }

    #[tokio::test]
    async fn a_repeat_while_running_is_aborted_and_one_after_a_crash_takes_over() {
        use tower::{Layer as _, Service as _, ServiceExt as _};
        let path = std::env::temp_dir().join(format!("idem-{}.db", uuid::Uuid::now_v7()));
        let db = crate::db::connect_lazy(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("db");
        CreateIdempotencyKeys
            .up(&SchemaManager::new(&db))
            .await
            .expect("table");
        let (calls, gate) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(tokio::sync::Semaphore::new(0)),
        );
        let layer = IdempotencyLayer::new(db.clone(), &["RentBook"], Duration::from_secs(20), 1024);
        let service = layer.layer(gated_handler(calls.clone(), gate.clone()));

        // The first call runs (and hangs in the handler)...
        let first = tokio::spawn(service.clone().oneshot(keyed_rent()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first call started"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // ...so a repeat is ABORTED without reaching the handler.
        let Ok(repeat) = service.clone().oneshot(keyed_rent()).await;
        assert_eq!(answer(repeat).await.0, Code::Aborted);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The process dies with the call running: its key stays `running`. Within the
        // running expiry a repeat is still ABORTED; past it (the row aged), it takes over.
        first.abort();
        let _ = first.await;
        let Ok(repeat) = service.clone().oneshot(keyed_rent()).await;
        assert_eq!(answer(repeat).await.0, Code::Aborted);
        entity::Entity::update_many()
            .col_expr(
                entity::Column::CreatedAt,
                Expr::value(crate::db::now() - chrono::Duration::minutes(1)),
            )
            .exec(&db)
            .await
            .expect("age the key");
        gate.add_permits(1);
        let Ok(taken_over) = service
            .clone()
            .ready()
            .await
            .expect("ready")
            .call(keyed_rent())
            .await;
        assert_eq!(
            answer(taken_over).await,
            (Code::Ok, Bytes::from_static(b"the first answer"))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the takeover ran the call");

        // Its answer is stored: the next repeat is answered without the handler.
        let Ok(replayed) = service.clone().oneshot(keyed_rent()).await;
        assert_eq!(
            answer(replayed).await.1,
            Bytes::from_static(b"the first answer")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(worth_repeating(Code::Unavailable));
        assert!(!worth_repeating(Code::AlreadyExists));
        assert!(!worth_repeating(Code::Ok));
    }
}

/// Creates the `idempotency_keys` table; the migrator of every service that honours keys
/// lists it.
pub struct CreateIdempotencyKeys;

mod migration {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::{integer, string_len, text};

    use crate::db::timestamp_column;

    #[derive(DeriveIden)]
    enum IdempotencyKeys {
        Table,
        Scope,
        Fingerprint,
        State,
        Code,
        Message,
        Details,
        Body,
        CreatedAt,
    }

    /// Bytes up to the message limit: MariaDB's BLOB stops at 64 KiB.
    fn blob(backend: sea_orm::DatabaseBackend, column: IdempotencyKeys) -> ColumnDef {
        let mut def = ColumnDef::new(column);
        match backend {
            sea_orm::DatabaseBackend::MySql => def.custom(Alias::new("LONGBLOB")),
            _ => def.blob(),
        };
        def.not_null();
        def
    }

    impl MigrationName for super::CreateIdempotencyKeys {
        fn name(&self) -> &str {
            "m0102_create_idempotency_keys"
        }
    }

    // The trait's signature elides the SchemaManager lifetime; matching it exactly is required.
    #[allow(elided_lifetimes_in_paths)]
    #[async_trait::async_trait]
    impl MigrationTrait for super::CreateIdempotencyKeys {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let backend = manager.get_database_backend();
            manager
                .create_table(
                    Table::create()
                        .table(IdempotencyKeys::Table)
                        .if_not_exists()
                        .col(string_len(IdempotencyKeys::Scope, 32).primary_key())
                        .col(string_len(IdempotencyKeys::Fingerprint, 16))
                        .col(string_len(IdempotencyKeys::State, 16))
                        .col(integer(IdempotencyKeys::Code))
                        .col(text(IdempotencyKeys::Message))
                        .col(blob(backend, IdempotencyKeys::Details))
                        .col(blob(backend, IdempotencyKeys::Body))
                        .col(timestamp_column(backend, IdempotencyKeys::CreatedAt).not_null())
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("idx_idempotency_keys_created_at")
                        .table(IdempotencyKeys::Table)
                        .col(IdempotencyKeys::CreatedAt)
                        .if_not_exists()
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
                .await
        }
    }
}

/// Keys older than `ttl` go: a retry comes within minutes, not days.
pub(crate) fn retention_target(ttl: Duration) -> crate::events::retention::RetentionTarget {
    crate::events::retention::RetentionTarget::by_age::<entity::Entity>(
        "idempotency_keys",
        ttl,
        entity::Column::CreatedAt,
    )
}
