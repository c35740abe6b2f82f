//! Development sign-in (`make run` only): `POST /auth/dev-token` hands out a token signed
//! with the local development key (`<pki-dir>/jwt.key`) for a role or a member, so the console
//! can be used without an identity provider. The services accept such a token only where
//! they trust that key: the local mesh. In production, users sign in at the OIDC provider and
//! the console sends its token (docs/gateway.md); this endpoint is off there.

use std::path::Path;
use std::time::Duration;

use bookmesh::auth::DevTokenIssuer;
use http::StatusCode;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::reply::{self, Response};

/// How long a development token lasts.
const LIFETIME_SECONDS: i64 = 3600;
/// A sign-in body is a role and an id.
const MAX_BODY_BYTES: usize = 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the console asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInRequest {
    /// `member`, `librarian` or `admin`.
    role: String,
    /// For `member`: who.
    #[serde(default)]
    member_id: Option<String>,
}

pub struct DevSignIn {
    issuer: DevTokenIssuer,
}

impl DevSignIn {
    /// Signs with `<pki_dir>/jwt.key`, for the issuer and audience the services check.
    pub fn new(pki_dir: &Path, issuer: &str, audience: &str) -> Result<Self, String> {
        DevTokenIssuer::from_pki(pki_dir, issuer, audience)
            .map(|issuer| Self { issuer })
            .map_err(|error| format!("development sign-in key: {error}"))
    }

    /// Answers `POST /auth/dev-token`.
    pub async fn issue(&self, request: hyper::Request<Incoming>) -> Response {
        let body = match tokio::time::timeout(
            BODY_TIMEOUT,
            Limited::new(request.into_body(), MAX_BODY_BYTES).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            _ => return invalid("the body must be JSON of at most 1 KiB"),
        };
        let asked: SignInRequest = match serde_json::from_slice(&body) {
            Ok(asked) => asked,
            Err(error) => return invalid(&format!("body: {error}")),
        };
        let (subject, roles): (String, &[&str]) = match asked.role.as_str() {
            "librarian" => ("librarian@dev".to_owned(), &["librarian"]),
            // Staff who may also switch faults and read dead letters.
            "admin" => ("admin@dev".to_owned(), &["librarian", "admin"]),
            "member" => match asked
                .member_id
                .as_deref()
                .map(|id| id.parse::<uuid::Uuid>())
            {
                Some(Ok(id)) => (id.to_string(), &["member"]),
                _ => return invalid("role member needs member_id, a UUID"),
            },
            _ => return invalid("role must be member, librarian or admin"),
        };
        let token = self.issuer.issue(&subject, roles, LIFETIME_SECONDS);
        tracing::info!(%subject, ?roles, "development sign-in");
        reply::json_value(
            StatusCode::OK,
            &serde_json::json!({
                "token": token,
                "subject": subject,
                "roles": roles,
                "expires_in_seconds": LIFETIME_SECONDS,
            }),
        )
    }
}

fn invalid(message: &str) -> Response {
    reply::error(StatusCode::BAD_REQUEST, "invalid_argument", message)
}

/// Whether the request comes from a page of this machine: its `Host` is localhost or a
/// loopback address (any port), and so is its `Origin` when it sends one. A DNS-rebinding page
/// reaches 127.0.0.1 under its own name, which this refuses.
pub fn from_this_machine(request: &hyper::Request<Incoming>) -> bool {
    let local = |authority: &str| {
        let host = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(authority, |(host, _)| host);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    };
    let header = |name: http::header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let host_ok = header(http::header::HOST).is_some_and(local);
    let origin_ok = header(http::header::ORIGIN).is_none_or(|origin| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(local)
    });
    host_ok && origin_ok
}
