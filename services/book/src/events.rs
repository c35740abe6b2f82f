//! The book service's side of the rental saga.
//!
//! Consumes the rental feed: ItemRented reserves the copy (AVAILABLE → UNAVAILABLE) and
//! publishes BookReserved, or publishes BookReservationRejected when the copy is not available
//! or unknown; ItemReturned puts the copy back on the shelf and publishes BookReturned, or
//! BookReturnRejected when the copy was not rented out or is unknown; RentCanceled frees the
//! copy if that rental reserved it (the rental service gave the rental up at its saga step
//! timeout, after this service had reserved the copy: ItemRented is always read first, the
//! two being one member's events in order). Each in one local transaction with the
//! consumer's inbox and cursor, so a redelivered event changes nothing.

use bookmesh::events::consumer::{EventHandler, HandlerError};
use bookmesh::events::outbox;
use bookmesh::events::{Event, NewEvent, decode};
use bookmesh::proto::book::v1::{
    BookReservationRejected, BookReserved, BookReturnRejected, BookReturned,
};
use bookmesh::proto::rental::v1::{ItemRented, ItemReturned, RentCanceled};
use futures::future::BoxFuture;
use sea_orm::DatabaseTransaction;

use crate::store::{self, Reservation};

/// A rental item's id as the books table stores it (canonical), or the event is rejected.
fn item_id(raw: &str) -> Result<String, HandlerError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.to_string())
        .map_err(|_| HandlerError::Rejected(format!("item_id {raw:?} is not a UUID")))
}

/// Handles the rental service's events.
pub struct RentalEvents;

impl EventHandler for RentalEvents {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if let Some(rented) = decode::<ItemRented>(event)? {
                let item_id = item_id(&rented.item_id)?;
                let reply = match store::reserve(txn, &rented.book_id, &item_id).await? {
                    Reservation::Reserved => NewEvent::new(
                        &rented.book_id,
                        &BookReserved {
                            book_id: rented.book_id.clone(),
                            member_id: rented.member_id.clone(),
                            item_id: rented.item_id.clone(),
                        },
                    ),
                    refused => NewEvent::new(
                        &rented.book_id,
                        &BookReservationRejected {
                            book_id: rented.book_id.clone(),
                            member_id: rented.member_id.clone(),
                            item_id: rented.item_id.clone(),
                            reason: if refused == Reservation::NotFound {
                                "book not found".into()
                            } else {
                                "book is not available".into()
                            },
                        },
                    ),
                };
                outbox::append(txn, vec![reply]).await?;
            } else if let Some(returned) = decode::<ItemReturned>(event)? {
                let released = store::release(txn, &returned.book_id).await?;
                let reply = match released {
                    Reservation::Reserved => NewEvent::new(
                        &returned.book_id,
                        &BookReturned {
                            book_id: returned.book_id.clone(),
                            member_id: returned.member_id.clone(),
                            item_id: returned.item_id.clone(),
                        },
                    ),
                    refused => NewEvent::new(
                        &returned.book_id,
                        &BookReturnRejected {
                            book_id: returned.book_id.clone(),
                            member_id: returned.member_id.clone(),
                            item_id: returned.item_id.clone(),
                            reason: if refused == Reservation::NotFound {
                                "book not found".into()
                            } else {
                                "book is not rented out".into()
                            },
                        },
                    ),
                };
                outbox::append(txn, vec![reply]).await?;
            } else if let Some(canceled) = decode::<RentCanceled>(event)? {
                let item_id = item_id(&canceled.item_id)?;
                if store::release_hold(txn, &canceled.book_id, &item_id).await? {
                    tracing::info!(
                        book_id = %canceled.book_id,
                        %item_id,
                        reason = %canceled.reason,
                        "rental canceled after its copy was reserved: copy freed"
                    );
                }
            }
            Ok(())
        })
    }
}
