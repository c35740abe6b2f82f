//! What the rental service publishes and what it consumes (the rental saga, rental's side).
//!
//! Publishes (feed on the rental port): ItemRented, RentConfirmed, RentCanceled, ItemReturned.
//! Consumes the book service's feed: BookReserved confirms a PENDING item (RENTED, then
//! RentConfirmed); BookReservationRejected cancels it (CANCELED with the reason, then
//! RentCanceled, on which the member service takes its points back).

use bookmesh::events::consumer::{EventHandler, HandlerError};
use bookmesh::events::outbox::Relay;
use bookmesh::events::{Event, NewEvent, decode};
use bookmesh::proto::book::v1::{
    BookReservationRejected, BookReserved, BookReturnRejected, BookReturned,
};
use bookmesh::proto::member::v1::PointsDeductionRejected;
use bookmesh::proto::rental::v1::{
    ItemRented, ItemReturned, OverdueCleared, RentCanceled, RentConfirmed, ReturnCanceled,
};
use futures::future::BoxFuture;
use sea_orm::DatabaseTransaction;
use uuid::Uuid;

use crate::domain::{ItemState, RentalCard, RentalItem, parse_uuid};
use crate::error::RentalError;
use crate::store;

pub fn item_rented(member_id: Uuid, item: &RentalItem) -> NewEvent {
    NewEvent::new(
        member_id,
        &ItemRented {
            member_id: member_id.to_string(),
            book_id: item.book_id.to_string(),
            item_id: item.item_id.to_string(),
            title: item.title.clone(),
            rented_at: Some(bookmesh::proto::timestamp(item.rented_at)),
        },
    )
}

pub fn item_returned(card: &RentalCard, book_id: Uuid, late_fee: i64) -> Vec<NewEvent> {
    card.items
        .iter()
        .rev()
        .find(|item| item.book_id == book_id && item.state == ItemState::ReturnPending)
        .map(|item| {
            NewEvent::new(
                card.member_id,
                &ItemReturned {
                    member_id: card.member_id.to_string(),
                    book_id: book_id.to_string(),
                    item_id: item.item_id.to_string(),
                    late_fee,
                },
            )
        })
        .into_iter()
        .collect()
}

pub fn overdue_cleared(member_id: Uuid, points: i64) -> NewEvent {
    NewEvent::new(
        member_id,
        &OverdueCleared {
            member_id: member_id.to_string(),
            points,
        },
    )
}

/// Handles the book service's events.
pub struct BookEvents {
    pub relay: Relay,
}

fn ids(member_id: &str, item_id: &str) -> Result<(Uuid, Uuid), HandlerError> {
    let parse = |field: &str, raw: &str| {
        parse_uuid(raw).map_err(|reason| HandlerError::Rejected(format!("{field} {reason}")))
    };
    Ok((parse("member_id", member_id)?, parse("item_id", item_id)?))
}

fn rejected(error: RentalError) -> HandlerError {
    match error {
        RentalError::Database(db) => HandlerError::Database(db),
        RentalError::Contended => HandlerError::Transient(error.to_string()),
        other => HandlerError::Rejected(other.to_string()),
    }
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
                store::update_in(
                    txn,
                    member_id,
                    |card| card.confirm_rent(item_id, now),
                    |card, changed| {
                        let item = card.items.iter().find(|item| item.item_id == item_id);
                        match (changed, item) {
                            (true, Some(item)) => vec![NewEvent::new(
                                member_id,
                                &RentConfirmed {
                                    member_id: member_id.to_string(),
                                    book_id: item.book_id.to_string(),
                                    item_id: item_id.to_string(),
                                    title: item.title.clone(),
                                },
                            )],
                            _ => Vec::new(),
                        }
                    },
                )
                .await
                .map_err(rejected)?;
            } else if let Some(returned) = decode::<BookReturned>(event)? {
                let (member_id, item_id) = ids(&returned.member_id, &returned.item_id)?;
                store::record_step(txn, member_id, item_id, event, "book back on the shelf")
                    .await?;
                store::update_in(
                    txn,
                    member_id,
                    |card| card.confirm_return(item_id, now),
                    |_, _| Vec::new(),
                )
                .await
                .map_err(rejected)?;
            } else if let Some(rejection) = decode::<BookReturnRejected>(event)? {
                let (member_id, item_id) = ids(&rejection.member_id, &rejection.item_id)?;
                store::record_step(txn, member_id, item_id, event, &rejection.reason).await?;
                store::update_in(
                    txn,
                    member_id,
                    |card| card.cancel_return(item_id, now),
                    |_, changed| {
                        if !changed {
                            return Vec::new();
                        }
                        vec![NewEvent::new(
                            member_id,
                            &ReturnCanceled {
                                member_id: member_id.to_string(),
                                book_id: rejection.book_id.clone(),
                                item_id: item_id.to_string(),
                                reason: rejection.reason.clone(),
                            },
                        )]
                    },
                )
                .await
                .map_err(rejected)?;
            } else if let Some(rejection) = decode::<BookReservationRejected>(event)? {
                let (member_id, item_id) = ids(&rejection.member_id, &rejection.item_id)?;
                store::record_step(txn, member_id, item_id, event, &rejection.reason).await?;
                store::update_in(
                    txn,
                    member_id,
                    |card| card.cancel_rent(item_id, &rejection.reason, now),
                    |_, changed| {
                        if !changed {
                            return Vec::new();
                        }
                        vec![NewEvent::new(
                            member_id,
                            &RentCanceled {
                                member_id: member_id.to_string(),
                                book_id: rejection.book_id.clone(),
                                item_id: item_id.to_string(),
                                reason: rejection.reason.clone(),
                            },
                        )]
                    },
                )
                .await
                .map_err(rejected)?;
            }
            Ok(())
        })
    }

    fn committed(&self) {
        self.relay.wake();
    }
}

/// Handles the member service's events: the clear-overdue saga's compensation.
pub struct MemberEvents;

impl EventHandler for MemberEvents {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if let Some(rejection) = decode::<PointsDeductionRejected>(event)? {
                let member_id = parse_uuid(&rejection.member_id)
                    .map_err(|reason| HandlerError::Rejected(format!("member_id {reason}")))?;
                store::update_in(
                    txn,
                    member_id,
                    |card| {
                        card.restore_late_fee(rejection.points, bookmesh::db::now());
                        Ok(())
                    },
                    |_, _| Vec::new(),
                )
                .await
                .map_err(rejected)?;
            }
            Ok(())
        })
    }
}
