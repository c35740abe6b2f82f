//! The member service's side of the rental saga: points.
//!
//! Consumes the rental feed: ItemRented awards 10 points, RentCanceled takes them back
//! (compensation), ItemReturned awards 10 more. Each in one local transaction with the
//! consumer's inbox and cursor, so a redelivered event never counts twice.

use bookmesh::events::consumer::{EventHandler, HandlerError};
use bookmesh::events::{Event, decode};
use bookmesh::proto::rental::v1::{ItemRented, ItemReturned, RentCanceled};
use futures::future::BoxFuture;
use sea_orm::DatabaseTransaction;

use crate::error::MemberError;
use crate::store;

/// Points for renting a book, and again for bringing it back.
pub const POINTS_PER_RENTAL: i64 = 10;
pub const POINTS_PER_RETURN: i64 = 10;

pub struct RentalEvents;

impl EventHandler for RentalEvents {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let change = if let Some(rented) = decode::<ItemRented>(event)? {
                Some((rented.member_id, POINTS_PER_RENTAL))
            } else if let Some(canceled) = decode::<RentCanceled>(event)? {
                Some((canceled.member_id, -POINTS_PER_RENTAL))
            } else {
                decode::<ItemReturned>(event)?
                    .map(|returned| (returned.member_id, POINTS_PER_RETURN))
            };
            let Some((member_id, delta)) = change else {
                return Ok(());
            };
            match store::add_points(txn, &member_id, delta).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(HandlerError::Rejected(format!(
                    "member {member_id} not found"
                ))),
                Err(MemberError::Database(db)) => Err(HandlerError::Database(db)),
                Err(other) => Err(HandlerError::Rejected(other.to_string())),
            }
        })
    }
}
