//! The book service's side of the rental saga.
//!
//! Consumes the rental feed: ItemRented reserves the copy (AVAILABLE → UNAVAILABLE) and
//! publishes BookReserved, or publishes BookReservationRejected when the copy is not available
//! or unknown; ItemReturned puts the copy back on the shelf and publishes BookReturned, or
//! BookReturnRejected when the copy was not rented out or is unknown. Each in one local transaction with
//! the consumer's inbox and cursor, so a redelivered event changes nothing.

use bookmesh::events::consumer::{EventHandler, HandlerError};
use bookmesh::events::outbox;
use bookmesh::events::{Event, NewEvent, decode};
use bookmesh::proto::book::v1::{
    BookReservationRejected, BookReserved, BookReturnRejected, BookReturned,
};
use bookmesh::proto::rental::v1::{ItemRented, ItemReturned};
use futures::future::BoxFuture;
use sea_orm::DatabaseTransaction;

use crate::store::{self, Reservation};

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
                let reply = match store::reserve(txn, &rented.book_id).await? {
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
            }
            Ok(())
        })
    }
}
