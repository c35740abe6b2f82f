//! The bookmesh platform: the generated contracts and the one server/client stack that every
//! service is built on, so that each service gets the same health, reflection, limits,
//! shutdown, logging, persistence helpers and error mapping without re-implementing them.

pub mod admin;
pub mod client;
pub mod config;
pub mod db;
pub mod deadline;
pub mod events;
pub mod metrics;
pub mod paging;
pub mod proto;
pub mod server;
pub mod status;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace_context;
