//! Each injected fault (docs/faults.md) against real processes: the fault is switched on
//! through the admin port of a running service, and the test asserts the outcome the
//! document promises (status codes, metrics, how the saga ends).

mod admin;
mod call_faults;
mod crash;
mod event_faults;
mod helpers;
