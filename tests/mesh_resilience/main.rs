//! The mesh in the library, proven with real processes on loopback: scale-out with
//! re-resolution, the circuit breaker, deadline propagation, the retry budget and load shedding.
//! Waits poll with deadlines; assertions are on counts. Figures (spread, latencies, memory) are
//! printed for people, and bounds on them are deliberately loose.
//!
//! `helpers.rs` starts the service processes and the scripted member double; each other file
//! is one proof.

mod circuit_breaker;
mod deadline_propagation;
mod helpers;
mod load_shedding;
mod retry_budget;
mod scale_out;
