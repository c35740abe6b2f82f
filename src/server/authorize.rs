//! Authorization: every call is checked against the policy before any handler runs. The
//! caller is its workload (the SPIFFE ID of its mTLS certificate) and its user (a verified
//! bearer token); the policy (`policy/authorization.toml`) says who may call what.
//!
//! Missing or bad credentials are UNAUTHENTICATED, a refusal by the policy is
//! PERMISSION_DENIED; each carries a `google.rpc.ErrorInfo` whose reason says why, is
//! counted in `bookmesh_authz_refusals_total` and logged once, naming the caller.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Full, Limited};
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::auth::{Authorizer, Caller, Decision, ON_BEHALF_OF_HEADER};
use crate::identity::SpiffeId;
use crate::identity::transport::PeerInfo;

/// Enforces the policy of `authorizer`; passes everything in the development mode (none).
#[derive(Clone)]
pub(crate) struct AuthorizeLayer {
    authorizer: Option<Arc<Authorizer>>,
    /// Whose certificates name workloads: this trust domain and namespace.
    own: Arc<SpiffeId>,
    /// Largest request read to check "the member themself".
    max_message_bytes: usize,
}

/// The service [`AuthorizeLayer`] makes.
#[derive(Clone)]
pub(crate) struct Authorize<S> {
    inner: S,
    layer: AuthorizeLayer,
}

// === impl AuthorizeLayer ===

impl AuthorizeLayer {
    pub(crate) fn new(
        authorizer: Option<Arc<Authorizer>>,
        own: SpiffeId,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            authorizer,
            own: Arc::new(own),
            max_message_bytes,
        }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            layer: self.clone(),
        }
    }
}

// === impl Authorize ===

impl<S> tower::Service<http::Request<Body>> for Authorize<S>
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
        let Some(authorizer) = self.layer.authorizer.clone() else {
            return Box::pin(self.inner.call(request));
        };
        // The clone answers later calls; this one, polled ready, serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (own, limit) = (self.layer.own.clone(), self.layer.max_message_bytes);
        Box::pin(async move {
            let method = request.uri().path().trim_start_matches('/').to_owned();
            let caller = match identify(&request, &authorizer, &own) {
                Ok(caller) => caller,
                Err(reason) => {
                    return Ok(refuse(
                        &authorizer,
                        &method,
                        &Caller::default(),
                        &request,
                        Code::Unauthenticated,
                        reason,
                    ));
                }
            };
            let span = tracing::Span::current();
            if let Some(workload) = &caller.workload {
                span.record("peer.workload", workload.as_str());
            }
            let on_behalf_of = caller
                .user
                .as_ref()
                .map(|user| user.subject.clone())
                .or_else(|| {
                    // A workload may name the user it calls for; only for the audit trail.
                    caller.workload.as_ref()?;
                    let named = request.headers().get(ON_BEHALF_OF_HEADER)?.to_str().ok()?;
                    (named.len() <= 128).then(|| named.to_owned())
                });
            if let Some(user) = &on_behalf_of {
                span.record("enduser.id", user.as_str());
            }
            let decided = match authorizer.decide(&method, &caller) {
                Decision::Allow => Ok(request),
                Decision::AllowIfField { field, subject } => {
                    own_request(request, &method, &field, &subject, limit)
                        .await
                        .map_err(|request| (request, Code::PermissionDenied, "NOT_SELF"))
                }
                Decision::Unauthenticated(reason) => Err((request, Code::Unauthenticated, reason)),
                Decision::Denied(reason) => Err((request, Code::PermissionDenied, reason)),
            };
            let request = match decided {
                Ok(request) => request,
                Err((request, code, reason)) => {
                    return Ok(refuse(
                        &authorizer,
                        &method,
                        &caller,
                        &request,
                        code,
                        reason,
                    ));
                }
            };
            let subject = on_behalf_of.map(Arc::<str>::from);
            crate::auth::on_behalf_of(subject, inner.call(request)).await
        })
    }
}

/// The caller of `request`: its workload (a certificate of this trust domain and namespace)
/// and its user (a valid token). A token that does not verify is refused outright.
fn identify(
    request: &http::Request<Body>,
    authorizer: &Authorizer,
    own: &SpiffeId,
) -> Result<Caller, &'static str> {
    let workload = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|peer| peer.workload.as_ref())
        .filter(|id| id.trust_domain() == own.trust_domain() && id.namespace() == own.namespace())
        .map(|id| id.service_account().to_owned());
    let user = match request.headers().get(http::header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| "TOKEN_MALFORMED")?;
            Some(
                authorizer
                    .verify_token(value)
                    .map_err(|refusal| refusal.reason())?,
            )
        }
    };
    Ok(Caller { workload, user })
}

/// `request` again if its `field` is `subject`; otherwise (or if it cannot be read) the
/// request back, to be refused. Reads the whole (unary) request, at most `limit` bytes.
async fn own_request(
    request: http::Request<Body>,
    method: &str,
    field: &str,
    subject: &str,
    limit: usize,
) -> Result<http::Request<Body>, http::Request<Body>> {
    let (parts, body) = request.into_parts();
    let Ok(collected) = Limited::new(body, limit.saturating_add(5)).collect().await else {
        return Err(http::Request::from_parts(parts, Body::empty()));
    };
    let bytes = collected.to_bytes();
    // One uncompressed gRPC frame: flag 0, a 4-byte length, the message.
    let message = (bytes.len() >= 5 && bytes[0] == 0)
        .then(|| {
            let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            bytes
                .get(5..5 + length)
                .filter(|m| m.len() + 5 == bytes.len())
        })
        .flatten();
    let owned = message
        .and_then(|message| crate::auth::request_field(method, field, message))
        .is_some_and(|value| value == subject);
    let request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
    if owned { Ok(request) } else { Err(request) }
}

/// The refusal answer, counted and logged.
fn refuse(
    authorizer: &Authorizer,
    method: &str,
    caller: &Caller,
    request: &http::Request<Body>,
    code: Code,
    reason: &'static str,
) -> http::Response<Body> {
    // Made-up methods must not make a series each.
    let label = if crate::auth::is_known(method) {
        method
    } else {
        "unknown"
    };
    crate::metrics::AUTHZ_REFUSALS
        .with_label_values(&[authorizer.server(), label, reason])
        .inc();
    let peer = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|peer| peer.remote_addr)
        .or_else(|| {
            request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
        });
    tracing::warn!(
        target: "bookmesh::authz",
        server = authorizer.server(),
        method = label,
        reason,
        workload = caller.workload.as_deref().unwrap_or("-"),
        subject = caller.user.as_ref().map_or("-", |user| user.subject.as_str()),
        peer = ?peer,
        "call refused"
    );
    let message = match code {
        Code::Unauthenticated => format!("{method}: credentials missing or invalid ({reason})"),
        _ => format!("{method}: not allowed for this caller ({reason})"),
    };
    let metadata = std::collections::HashMap::from([("method".to_owned(), label.to_owned())]);
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, "bookmesh.io", metadata),
    )
    .into_http()
}
