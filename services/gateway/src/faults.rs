//! `/api/faults`: the console's fault switches, passed on to the services' admin ports
//! (docs/faults.md). `GET /api/faults` lists every replica's faults; `PUT` and `DELETE
//! /api/faults/<service>/<fault>` switch one on every replica of a service. The caller's
//! token goes along: each service decides (role admin), the gateway holds no rights of its
//! own.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};

use crate::admin::{self, AdminTargets};
use crate::reply::{self, Response};

/// Fault settings are a few fields (the services' own limit).
const MAX_BODY_BYTES: usize = 4096;
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct FaultSwitches {
    targets: Arc<AdminTargets>,
    requires_token: bool,
}

impl FaultSwitches {
    pub fn new(targets: Arc<AdminTargets>, requires_token: bool) -> Self {
        Self {
            targets,
            requires_token,
        }
    }

    /// Answers a request under `/api/faults`.
    pub async fn answer(&self, request: hyper::Request<Incoming>) -> Response {
        let path = request.uri().path().to_owned();
        let rest = path
            .strip_prefix("/api/faults")
            .unwrap_or_default()
            .trim_start_matches('/');
        if rest.is_empty() {
            return if request.method() == Method::GET {
                self.list().await
            } else {
                reply::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "unimplemented",
                    "GET /api/faults",
                )
            };
        }
        let Some((service, fault)) = rest.split_once('/') else {
            return not_found();
        };
        let fault_name_ok = !fault.is_empty()
            && fault.len() <= 32
            && fault.chars().all(|c| c.is_ascii_lowercase() || c == '-');
        if !self.targets.has(service) || !fault_name_ok {
            return not_found();
        }
        let method = request.method().clone();
        if request.headers().get(header::AUTHORIZATION).is_none() && self.requires_token {
            // Every replica would refuse it: do not fan out for nothing.
            return reply::error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "switching a fault needs a token with role admin",
            );
        }
        if method != Method::PUT && method != Method::DELETE {
            return reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "unimplemented",
                "PUT or DELETE /api/faults/<service>/<fault>",
            );
        }
        let authorization = request.headers().get(header::AUTHORIZATION).cloned();
        let body = match tokio::time::timeout(
            BODY_TIMEOUT,
            Limited::new(request.into_body(), MAX_BODY_BYTES).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            _ => {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "the settings must be JSON of at most 4 KiB",
                );
            }
        };
        let path = format!("/faults/{fault}");
        let replicas = self.targets.replicas(service).await;
        let answers = futures::future::join_all(replicas.iter().map(|address| {
            admin::call(
                *address,
                method.clone(),
                &path,
                authorization.as_ref(),
                body.clone(),
            )
        }))
        .await;
        let replicas: Vec<Value> = replicas
            .iter()
            .zip(answers)
            .map(|(address, answer)| match answer {
                Ok((status, body)) => json!({
                    "address": address.to_string(),
                    "status": status.as_u16(),
                    "body": as_json(&body),
                }),
                Err(error) => json!({
                    "address": address.to_string(),
                    "status": 502,
                    "body": { "error": error },
                }),
            })
            .collect();
        reply::json_value(StatusCode::OK, &json!({ "replicas": replicas }))
    }

    async fn list(&self) -> Response {
        // Every service at once, as the mesh view does.
        let listed = futures::future::join_all(self.targets.names().map(|name| async move {
            let replicas = self.targets.replicas(name).await;
            let answers =
                futures::future::join_all(replicas.iter().map(|address| {
                    admin::call(*address, Method::GET, "/faults", None, Bytes::new())
                }))
                .await;
            (name, replicas, answers)
        }))
        .await;
        let mut services = Vec::new();
        for (name, replicas, answers) in listed {
            let replicas: Vec<Value> = replicas
                .iter()
                .zip(answers)
                .map(|(address, answer)| {
                    let mut row = match answer {
                        Ok((StatusCode::OK, body)) => as_json(&body),
                        Ok((status, _)) => json!({ "error": format!("answered {status}") }),
                        Err(error) => json!({ "error": error }),
                    };
                    if let Some(row) = row.as_object_mut() {
                        row.insert("address".into(), address.to_string().into());
                    }
                    row
                })
                .collect();
            services.push(json!({ "name": name, "replicas": replicas }));
        }
        reply::json_value(StatusCode::OK, &json!({ "services": services }))
    }
}

/// A service's JSON answer as a value (a string if it is not JSON).
fn as_json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn not_found() -> Response {
    reply::error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such service or fault: /api/faults/<service>/<fault>",
    )
}
