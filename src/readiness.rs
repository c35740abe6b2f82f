//! Whether a service can do its work, as one value shared by everything that asks: the health
//! service, the admin port's `/readyz`, the readiness gate in front of the handlers, and the
//! long-lived tasks (feeds, consumers) that must end when a stop signal arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Whether the service can do its work: its database is migrated and answering, and it is
/// not shutting down. Cheap to clone; every clone sees the same state.
#[derive(Clone)]
pub struct Readiness {
    serving: Arc<watch::Sender<bool>>,
    /// Latches on the first `set_serving(true)`: the service's tables exist from then on.
    started: Arc<AtomicBool>,
    /// Latches when a stop signal arrives: from then on the service is never ready again.
    stopping: Arc<watch::Sender<bool>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Not ready, not started, not stopping.
    pub fn new() -> Self {
        Self {
            serving: Arc::new(watch::Sender::new(false)),
            started: Arc::new(AtomicBool::new(false)),
            stopping: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Reports whether the database answers (after migrations); ignored once stopping.
    pub fn set_serving(&self, serving: bool) {
        if serving {
            self.started.store(true, Ordering::Release);
        }
        let serving = serving && !*self.stopping.borrow();
        self.serving.send_if_modified(|current| {
            let changed = *current != serving;
            *current = serving;
            changed
        });
    }

    /// A stop signal arrived: not ready from now on, whatever the database says.
    pub fn mark_stopping(&self) {
        self.stopping.send_replace(true);
        self.set_serving(false);
    }

    /// Turns true when a stop signal arrives: long-lived work (event streams, consumers) ends.
    pub fn stopping_signal(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Follows [`Readiness::is_serving`] (the health status watches it).
    pub fn serving_signal(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// Completes once the service became ready for the first time (its tables exist).
    pub async fn started(&self) {
        let mut serving = self.serving.subscribe();
        while !self.has_started() {
            if serving.changed().await.is_err() {
                return;
            }
        }
    }

    /// Ready right now: migrated, the database answered the last check, not stopping.
    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// Became ready at least once: the tables exist, so calls may reach the handlers.
    pub fn has_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}
