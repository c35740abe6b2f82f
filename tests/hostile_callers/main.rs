//! Hostile and careless callers, against real service processes: one caller cannot hurt the
//! others, and nothing a caller sends makes anything grow without a bound. Each file is one
//! guarantee of docs/reliability.md.

mod buggy_handlers;
mod drain;
mod event_feed;
mod helpers;
mod http2;
mod metric_labels;
