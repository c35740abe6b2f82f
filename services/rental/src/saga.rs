//! What the rental service consumes: its side of the rental and clear-overdue sagas.
//!
//! From the book service's feed: BookReserved confirms a PENDING item (RENTED, then
//! RentConfirmed); BookReservationRejected cancels it (CANCELED with the reason, then
//! RentCanceled, on which the member service takes its points back); BookReturned completes a
//! return; BookReturnRejected puts the item back (RENTED, its late fee removed, then
//! ReturnCanceled). From the member service's feed: PointsDeducted completes a cleared late
//! fee's payment (the card is free again); PointsDeductionRejected restores the fee a member
//! could not pay.
//!
//! Each step is recorded for the saga's history, in the same transaction as its effect.

use bookmesh::events::consumer::{EventHandler, HandlerError};
use bookmesh::events::{Event, decode};
use bookmesh::proto::book::v1::{
    BookReservationRejected, BookReserved, BookReturnRejected, BookReturned,
};
use bookmesh::proto::member::v1::{PointsDeducted, PointsDeductionRejected};
use futures::future::BoxFuture;
use sea_orm::DatabaseTransaction;
use uuid::Uuid;

use crate::domain::parse_uuid;
use crate::store;

/// Handles the book service's events.
pub struct BookEvents;

/// Handles the member service's events.
pub struct MemberEvents;

fn parse(field: &str, raw: &str) -> Result<Uuid, HandlerError> {
    parse_uuid(raw).map_err(|reason| HandlerError::Rejected(format!("{field} {reason}")))
}

fn ids(member_id: &str, item_id: &str) -> Result<(Uuid, Uuid), HandlerError> {
    Ok((parse("member_id", member_id)?, parse("item_id", item_id)?))
}

impl EventHandler for BookEvents {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let now = bookmesh::db::now();
            if let Some(reserved) = decode::<BookReserved>(event)? {
                let (member_id, item_id) = ids(&reserved.member_id, &reserved.item_id)?;
                store::record_step(txn, member_id, item_id, event, "book reserved").await?;
                store::update_in(txn, member_id, Some(item_id), |card| {
                    card.confirm_rent(item_id, now)
                })
                .await?;
            } else if let Some(rejection) = decode::<BookReservationRejected>(event)? {
                let (member_id, item_id) = ids(&rejection.member_id, &rejection.item_id)?;
                store::record_step(txn, member_id, item_id, event, &rejection.reason).await?;
                store::update_in(txn, member_id, Some(item_id), |card| {
                    card.cancel_rent(item_id, &rejection.reason, now)
                })
                .await?;
            } else if let Some(returned) = decode::<BookReturned>(event)? {
                let (member_id, item_id) = ids(&returned.member_id, &returned.item_id)?;
                store::record_step(txn, member_id, item_id, event, "book back on the shelf")
                    .await?;
                store::update_in(txn, member_id, Some(item_id), |card| {
                    card.confirm_return(item_id, now)
                })
                .await?;
            } else if let Some(rejection) = decode::<BookReturnRejected>(event)? {
                let (member_id, item_id) = ids(&rejection.member_id, &rejection.item_id)?;
                store::record_step(txn, member_id, item_id, event, &rejection.reason).await?;
                store::update_in(txn, member_id, Some(item_id), |card| {
                    card.cancel_return(item_id, &rejection.reason, now)
                })
                .await?;
            }
            Ok(())
        })
    }
}

impl EventHandler for MemberEvents {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if let Some(deducted) = decode::<PointsDeducted>(event)? {
                let member_id = parse("member_id", &deducted.member_id)?;
                store::update_in(txn, member_id, None, |card| {
                    Ok(card.confirm_payment(deducted.points, bookmesh::db::now()))
                })
                .await?;
            } else if let Some(rejection) = decode::<PointsDeductionRejected>(event)? {
                let member_id = parse("member_id", &rejection.member_id)?;
                store::update_in(txn, member_id, None, |card| {
                    Ok(card.restore_late_fee(rejection.points, bookmesh::db::now()))
                })
                .await?;
            }
            Ok(())
        })
    }
}
