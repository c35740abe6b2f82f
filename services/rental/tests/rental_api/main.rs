//! The rental service over real gRPC, with the real member and book services beside it, each
//! on its own fresh database (engine picked by `BOOKMESH_TEST_DB`).
//!
//! `helpers.rs` starts the mesh and waits on it; every other file is one feature.

mod best_sellers;
mod card_history;
mod compensation;
mod failures;
mod helpers;
mod idempotency;
mod renting;
mod returning_and_overdue;
mod trace_propagation;
mod watch_history;
