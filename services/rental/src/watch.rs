//! WatchRentalHistory: a member's saga timeline, streamed as it changes (the console's live
//! view).
//!
//! A watcher does not re-read the whole history on a timer. It looks at a fingerprint of the
//! member's history (two indexed lookups, [`RentalStore::history_fingerprint`]) whenever this
//! process commits a change to that member's card, and every [`POLL`] for what the event consumers or other
//! replicas committed; only when the fingerprint moved does it read and send the history.
//!
//! Bounds, so that watchers cannot exhaust a replica: at most `--max-history-watchers` streams
//! at once and [`MAX_WATCHERS_PER_MEMBER`] per member (RESOURCE_EXHAUSTED past either), each
//! open at most [`MAX_LIFETIME`] or until the caller's deadline (then it ends with OK and the client subscribes again, possibly to
//! another replica), one message in flight (a slow reader delays its own next look, and
//! changes in between arrive as one message), and every stream ends when the service starts
//! to stop.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bookmesh::proto::rental::v1 as pb;
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::error::RentalError;
use crate::messages::saga_messages;
use crate::store::RentalStore;

/// How often a watcher looks for changes it was not told about.
pub const POLL: Duration = Duration::from_millis(500);
/// The longest a stream stays open: long streams would pin clients to one replica, and a
/// stream nobody reads any more still holds a slot until then.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// How long before the caller's deadline a stream ends (with OK).
pub const END_BEFORE_DEADLINE: Duration = Duration::from_millis(50);

pub type HistoryStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchRentalHistoryResponse, Status>> + Send>>;

/// Streams one member may hold open on a replica: a console in a few tabs, not every slot.
pub const MAX_WATCHERS_PER_MEMBER: usize = 8;

/// The open watch streams of this replica.
#[derive(Clone)]
pub struct Watchers {
    store: RentalStore,
    slots: Arc<Semaphore>,
    max_watchers: usize,
    /// Open streams per member; an entry goes when its last stream ends, so the map is never
    /// larger than the streams open.
    per_member: Arc<std::sync::Mutex<HashMap<Uuid, usize>>>,
    stopping: watch::Receiver<bool>,
}

/// One member's share of the watchers, given back when the stream ends.
struct MemberShare {
    per_member: Arc<std::sync::Mutex<HashMap<Uuid, usize>>>,
    member_id: Uuid,
}

impl Drop for MemberShare {
    fn drop(&mut self) {
        let mut per_member = lock(&self.per_member);
        if let Some(open) = per_member.get_mut(&self.member_id) {
            *open -= 1;
            if *open == 0 {
                per_member.remove(&self.member_id);
            }
        }
    }
}

fn lock(
    map: &std::sync::Mutex<HashMap<Uuid, usize>>,
) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
    // A poisoned lock only means a panic elsewhere while holding it; the counts are whole.
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Watchers {
    pub fn new(store: RentalStore, max_watchers: usize, stopping: watch::Receiver<bool>) -> Self {
        Self {
            store,
            slots: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
            per_member: Arc::default(),
            stopping,
        }
    }

    /// Opens a stream of `member_id`'s history, ending after `lifetime` (the caller's
    /// deadline, at most [`MAX_LIFETIME`]).
    pub fn open(&self, member_id: Uuid, lifetime: Duration) -> Result<HistoryStream, Status> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Err(Status::with_error_details(
                tonic::Code::ResourceExhausted,
                format!(
                    "this replica already streams {} histories; retry later",
                    self.max_watchers
                ),
                tonic_types::ErrorDetails::with_error_info(
                    "HISTORY_WATCHERS_EXHAUSTED",
                    "bookmesh.io",
                    [(
                        "max_history_watchers".to_owned(),
                        self.max_watchers.to_string(),
                    )],
                ),
            ));
        };
        let share = {
            let mut per_member = lock(&self.per_member);
            let open = per_member.entry(member_id).or_insert(0);
            if *open >= MAX_WATCHERS_PER_MEMBER {
                return Err(Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    format!(
                        "this member already watches {MAX_WATCHERS_PER_MEMBER} streams on this \
                         replica; close one"
                    ),
                    tonic_types::ErrorDetails::with_error_info(
                        "HISTORY_WATCHERS_PER_MEMBER_EXHAUSTED",
                        "bookmesh.io",
                        [(
                            "max_watchers_per_member".to_owned(),
                            MAX_WATCHERS_PER_MEMBER.to_string(),
                        )],
                    ),
                ));
            }
            *open += 1;
            MemberShare {
                per_member: self.per_member.clone(),
                member_id,
            }
        };
        let (tx, rx) = mpsc::channel(1);
        let watcher = self.clone();
        let ends_at = Instant::now() + lifetime.min(MAX_LIFETIME);
        tokio::spawn(watcher.pump(member_id, ends_at, tx, (slot, share)));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn pump(
        self,
        member_id: Uuid,
        ends_at: Instant,
        tx: mpsc::Sender<Result<pb::WatchRentalHistoryResponse, Status>>,
        _slots: (OwnedSemaphorePermit, MemberShare),
    ) {
        let mut changes = self.store.changes();
        let mut stopping = self.stopping.clone();
        // What the last message showed; `Some(None)` is "no card yet".
        let mut sent: Option<Option<(i64, i64)>> = None;
        loop {
            if *stopping.borrow() {
                // The client resubscribes, to a replica that is not stopping (a reader too
                // slow to take this at once just sees the stream end).
                let _ = tx.try_send(Err(Status::unavailable(
                    "the service is stopping; watch again",
                )));
                return;
            }
            let now = match self.store.history_fingerprint(member_id).await {
                Ok(fingerprint) => fingerprint,
                Err(error) => {
                    let _ = tx.try_send(Err(unavailable(&error)));
                    return;
                }
            };
            if sent != Some(now) {
                let sagas = if now.is_some() {
                    match self.store.history(member_id).await {
                        Ok(history) => history.as_ref().map(saga_messages).unwrap_or_default(),
                        Err(error) => {
                            let _ = tx.try_send(Err(unavailable(&error)));
                            return;
                        }
                    }
                } else {
                    Vec::new()
                };
                let message = pb::WatchRentalHistoryResponse { sagas };
                // Waits while the reader is slow, so at most one message is in flight; but
                // never past the stream's end or the service's stop: a caller that stops
                // reading must not hold its slot (and its connection's window) for ever.
                let delivered = tokio::select! {
                    sent = tx.send(Ok(message)) => sent.is_ok(),
                    () = tokio::time::sleep_until(ends_at) => false,
                    () = async {
                        let _ = stopping.wait_for(|stop| *stop).await;
                    } => false,
                };
                if !delivered {
                    return;
                }
                sent = Some(now);
            }
            // Wait for a reason to look: a change of this member's card here, the poll (what
            // other replicas and the consumers committed), the stop, or the end.
            let poll = tokio::time::sleep(POLL);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    // Ends with OK (the stream closes when `tx` drops): the caller subscribes
                    // again.
                    () = tokio::time::sleep_until(ends_at) => return,
                    changed = changes.recv() => match changed {
                        // Another member's card: keep waiting, without a query.
                        Ok(member) if member != member_id => {}
                        // Ours, or notices missed (lagged): look.
                        _ => break,
                    },
                    _ = stopping.changed() => break,
                    () = &mut poll => break,
                    () = tx.closed() => return,
                }
            }
        }
    }
}

/// A database failure while watching: the client subscribes again (the details are logged,
/// not sent).
fn unavailable(error: &RentalError) -> Status {
    tracing::warn!(%error, "history watch failed");
    Status::unavailable("the rental history is unavailable; watch again")
}
