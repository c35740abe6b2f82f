//! The member service's side of the sagas: points.
//!
//! Consumes the rental feed: ItemRented awards 10 points, RentCanceled takes them back
//! (compensation), ItemReturned awards 10 more and ReturnCanceled takes those back;
//! OverdueCleared deducts the late fee's points and publishes PointsDeducted, or publishes
//! PointsDeductionRejected when the member has too few (the rental service then restores the
//! fee). Each in one local transaction with the consumer's inbox and cursor, so a redelivered
//! event never counts twice.

use bookmesh::events::consumer::{EventHandler, HandlerError};
use bookmesh::events::outbox;
use bookmesh::events::{Event, NewEvent, decode};
use bookmesh::proto::member::v1::{PointsDeducted, PointsDeductionRejected};
use bookmesh::proto::rental::v1::{
    ItemRented, ItemReturned, OverdueCleared, RentCanceled, ReturnCanceled,
};
use futures::future::BoxFuture;
use sea_orm::DatabaseTransaction;

use crate::store::{self, Deduction};

/// Points for renting a book, and again for bringing it back.
pub const POINTS_PER_RENTAL: i64 = 10;
pub const POINTS_PER_RETURN: i64 = 10;

/// Handles the rental service's events.
pub struct RentalEvents;

impl EventHandler for RentalEvents {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if let Some(cleared) = decode::<OverdueCleared>(event)? {
                let reply =
                    match store::deduct_points(txn, &cleared.member_id, cleared.points).await? {
                        Deduction::Deducted { balance } => NewEvent::new(
                            &cleared.member_id,
                            &PointsDeducted {
                                member_id: cleared.member_id.clone(),
                                points: cleared.points,
                                balance,
                            },
                        ),
                        Deduction::TooFewPoints { balance } => NewEvent::new(
                            &cleared.member_id,
                            &PointsDeductionRejected {
                                member_id: cleared.member_id.clone(),
                                points: cleared.points,
                                balance,
                                reason: format!(
                                    "the member has {balance} points, {} are needed",
                                    cleared.points
                                ),
                            },
                        ),
                        Deduction::NoSuchMember => {
                            return Err(HandlerError::Rejected(format!(
                                "member {} not found",
                                cleared.member_id
                            )));
                        }
                    };
                outbox::append(txn, vec![reply]).await?;
                return Ok(());
            }
            let change = if let Some(rented) = decode::<ItemRented>(event)? {
                Some((rented.member_id, POINTS_PER_RENTAL))
            } else if let Some(canceled) = decode::<RentCanceled>(event)? {
                Some((canceled.member_id, -POINTS_PER_RENTAL))
            } else if let Some(returned) = decode::<ItemReturned>(event)? {
                Some((returned.member_id, POINTS_PER_RETURN))
            } else {
                decode::<ReturnCanceled>(event)?
                    .map(|canceled| (canceled.member_id, -POINTS_PER_RETURN))
            };
            let Some((member_id, delta)) = change else {
                return Ok(());
            };
            match store::add_points(txn, &member_id, delta).await? {
                true => Ok(()),
                false => Err(HandlerError::Rejected(format!(
                    "member {member_id} not found"
                ))),
            }
        })
    }
}
