//! WatchRentalHistory: a member's saga timeline, streamed as it changes (the console's live
//! view).
//!
//! A watcher does not re-read the whole history on a timer. It looks at a fingerprint of the
//! member's history (two indexed lookups, [`RentalStore::history_fingerprint`]) whenever this
//! process commits a card change, and every [`POLL`] for what the event consumers or other
//! replicas committed; only when the fingerprint moved does it read and send the history.
//!
//! Bounds, so that watchers cannot exhaust a replica: at most `--max-history-watchers` streams
//! at once (RESOURCE_EXHAUSTED past it), each open at most [`MAX_LIFETIME`] or until the
//! caller's deadline (then it ends with OK and the client subscribes again, possibly to
//! another replica), one message in flight (a slow reader delays its own next look, and
//! changes in between arrive as one message), and every stream ends when the service starts
//! to stop.

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

pub type HistoryStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchRentalHistoryResponse, Status>> + Send>>;

/// The open watch streams of this replica.
#[derive(Clone)]
pub struct Watchers {
    store: RentalStore,
    slots: Arc<Semaphore>,
    max_watchers: usize,
    stopping: watch::Receiver<bool>,
}

impl Watchers {
    pub fn new(store: RentalStore, max_watchers: usize, stopping: watch::Receiver<bool>) -> Self {
        Self {
            store,
            slots: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
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
        let (tx, rx) = mpsc::channel(1);
        let watcher = self.clone();
        let ends_at = Instant::now() + lifetime.min(MAX_LIFETIME);
        tokio::spawn(watcher.pump(member_id, ends_at, tx, slot));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn pump(
        self,
        member_id: Uuid,
        ends_at: Instant,
        tx: mpsc::Sender<Result<pb::WatchRentalHistoryResponse, Status>>,
        _slot: OwnedSemaphorePermit,
    ) {
        let mut changes = self.store.changes();
        let mut stopping = self.stopping.clone();
        // What the last message showed; `Some(None)` is "no card yet".
        let mut sent: Option<Option<(i64, i64)>> = None;
        loop {
            if *stopping.borrow() {
                // The client resubscribes, to a replica that is not stopping.
                let _ = tx
                    .send(Err(Status::unavailable(
                        "the service is stopping; watch again",
                    )))
                    .await;
                return;
            }
            let now = match self.store.history_fingerprint(member_id).await {
                Ok(fingerprint) => fingerprint,
                Err(error) => {
                    let _ = tx.send(Err(unavailable(&error))).await;
                    return;
                }
            };
            if sent != Some(now) {
                let sagas = if now.is_some() {
                    match self.store.history(member_id).await {
                        Ok(history) => history.as_ref().map(saga_messages).unwrap_or_default(),
                        Err(error) => {
                            let _ = tx.send(Err(unavailable(&error))).await;
                            return;
                        }
                    }
                } else {
                    Vec::new()
                };
                let message = pb::WatchRentalHistoryResponse { sagas };
                // Waits while the reader is slow, so at most one message is in flight.
                if tx.send(Ok(message)).await.is_err() {
                    return; // the caller went away
                }
                sent = Some(now);
            }
            tokio::select! {
                // Ends with OK (the stream closes when `tx` drops): the caller subscribes again.
                () = tokio::time::sleep_until(ends_at) => return,
                _ = changes.changed() => {}
                _ = stopping.changed() => {}
                () = tokio::time::sleep(POLL) => {}
                () = tx.closed() => return,
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
