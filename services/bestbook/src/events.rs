//! The projection: each RentConfirmed (a rental the book service reserved) adds one to the
//! book's count. Canceled rentals never count, since they are never confirmed. The consumer's
//! inbox makes a redelivered event count once.

use bookmesh::events::consumer::{EventHandler, HandlerError};
use bookmesh::events::{Event, decode};
use bookmesh::proto::rental::v1::RentConfirmed;
use futures::future::BoxFuture;
use sea_orm::DatabaseTransaction;

use crate::store;

pub struct RentalEvents;

impl EventHandler for RentalEvents {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if let Some(confirmed) = decode::<RentConfirmed>(event)? {
                store::count_rental(txn, &confirmed.book_id, &confirmed.title).await?;
            }
            Ok(())
        })
    }
}
