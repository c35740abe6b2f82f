//! The bookmesh platform: the generated contracts and the one server/client stack that every
//! service is built on, so that each service gets the same health, reflection, limits,
//! shutdown, logging, persistence helpers and error mapping without re-implementing them.
//!
//! A service implements [`service::Service`] and is run by [`service::run`]; its handlers use
//! [`status`] and [`paging`] at the edge, [`db`] and [`events`] behind it, and
//! [`client::Upstream`] to call other services.
//!
//! # Layers
//!
//! The modules form layers. A module imports only from its own layer or the layers listed
//! before it, so the module graph has no cycle; `tests/module_graph.rs` reads this list and
//! every `use crate::…` path, and fails on a cycle or an import from a later layer.
//!
//! 1. `proto`: the contracts generated from `proto/`.
//! 2. `config`: command-line and environment settings, defaults written once.
//! 3. `status`, `paging`: the gRPC conventions for bad input and pages.
//! 4. `metrics`, `trace_context`, `deadline`: process-wide metrics, and what the request
//!    being served carries (its trace, its deadline).
//! 5. `telemetry`: logging and trace export.
//! 6. `readiness`, `listener`, `identity`, `faults`: whether the service can work; binding
//!    its sockets; who it is (its certificate) and the mTLS it speaks; the faults a user
//!    switched on.
//! 7. `admin`, `db`, `auth`: the admin HTTP port; database pools, migrations and contention;
//!    user tokens and the authorization policy.
//! 8. `client`: the client stack (trace, metrics, deadline, retry, breaker, balance).
//! 9. `events`: the outbox, its relay and feed, consumers, dead letters, JetStream.
//! 10. `server`: the server stack (readiness gate, load shed, trace, metrics, access log,
//!     deadline) and the server runtime.
//! 11. `service`: the one service skeleton.
//! 12. `testing`: helpers for tests (feature `testing`).

#![warn(missing_docs, unreachable_pub)]

mod admin;
pub mod auth;
pub mod client;
pub mod config;
pub mod db;
pub mod deadline;
pub mod events;
pub mod faults;
pub mod identity;
mod listener;
pub mod metrics;
pub mod paging;
pub mod proto;
pub mod readiness;
pub mod server;
pub mod service;
pub mod status;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod trace_context;
