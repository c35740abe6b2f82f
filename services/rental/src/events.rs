//! What the rental service publishes: each [`Change`] a card rule makes, as the event other
//! services read on the rental feed. Changes that concern nobody else publish nothing.
//!
//! | change | event | who reacts |
//! |---|---|---|
//! | `Rented` | `ItemRented` | book reserves the copy; member awards points |
//! | `RentConfirmed` | `RentConfirmed` | bestbook counts the rental |
//! | `RentCanceled` | `RentCanceled` | member takes the points back |
//! | `ReturnStarted` | `ItemReturned` | book takes the copy back; member awards points |
//! | `ReturnCanceled` | `ReturnCanceled` | member takes the points back |
//! | `OverdueCleared` | `OverdueCleared` | member deducts the late fee's points |
//! | `MarkedOverdue` | `ItemOverdue` | notification tells the member their card is suspended |
//!
//! What the rental service consumes is in `saga.rs`.

use bookmesh::events::NewEvent;
use bookmesh::proto::rental::v1::{
    ItemOverdue, ItemRented, ItemReturned, OverdueCleared, RentCanceled, RentConfirmed,
    ReturnCanceled,
};
use bookmesh::proto::timestamp;
use uuid::Uuid;

use crate::domain::Change;

/// The event `member_id`'s card publishes for `change`, if any. Events are keyed by member, so
/// one card's events keep their order.
pub fn published(member_id: Uuid, change: &Change) -> Option<NewEvent> {
    let member = member_id.to_string();
    let event = match change {
        Change::Rented(item) => NewEvent::new(
            member_id,
            &ItemRented {
                member_id: member,
                book_id: item.book_id.to_string(),
                item_id: item.item_id.to_string(),
                title: item.title.clone(),
                rented_at: Some(timestamp(item.rented_at)),
            },
        ),
        Change::RentConfirmed(item) => NewEvent::new(
            member_id,
            &RentConfirmed {
                member_id: member,
                book_id: item.book_id.to_string(),
                item_id: item.item_id.to_string(),
                title: item.title.clone(),
                due_at: Some(timestamp(item.due_at)),
            },
        ),
        Change::RentCanceled(item) => NewEvent::new(
            member_id,
            &RentCanceled {
                member_id: member,
                book_id: item.book_id.to_string(),
                item_id: item.item_id.to_string(),
                reason: item.cancel_reason.clone().unwrap_or_default(),
                title: item.title.clone(),
            },
        ),
        Change::ReturnStarted(item) => NewEvent::new(
            member_id,
            &ItemReturned {
                member_id: member,
                book_id: item.book_id.to_string(),
                item_id: item.item_id.to_string(),
                late_fee: item.late_fee,
                title: item.title.clone(),
            },
        ),
        Change::ReturnCanceled { item, reason } => NewEvent::new(
            member_id,
            &ReturnCanceled {
                member_id: member,
                book_id: item.book_id.to_string(),
                item_id: item.item_id.to_string(),
                reason: reason.clone(),
            },
        ),
        Change::OverdueCleared { points } => NewEvent::new(
            member_id,
            &OverdueCleared {
                member_id: member,
                points: *points,
            },
        ),
        Change::MarkedOverdue(item) => NewEvent::new(
            member_id,
            &ItemOverdue {
                member_id: member,
                book_id: item.book_id.to_string(),
                item_id: item.item_id.to_string(),
                title: item.title.clone(),
                due_at: Some(timestamp(item.due_at)),
            },
        ),
        Change::ReturnConfirmed(_)
        | Change::LateFeePaid { .. }
        | Change::LateFeeRestored { .. } => {
            return None;
        }
    };
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RentalCard;
    use prost::Name as _;

    #[test]
    fn each_change_that_concerns_others_publishes_its_event() {
        let member = Uuid::now_v7();
        let mut card = RentalCard::new(member);
        let now = chrono::Utc::now();
        let rented = card.rent(Uuid::now_v7(), "Dune".into(), now).expect("rent");
        let event = published(member, &rented).expect("published");
        assert_eq!(event.event_type, ItemRented::full_name());
        assert_eq!(event.aggregate_id, member.to_string());
        let item = rented.item().expect("item").clone();
        assert!(published(member, &Change::ReturnConfirmed(item.clone())).is_none());
        let overdue = published(member, &Change::MarkedOverdue(item)).expect("event");
        assert_eq!(overdue.event_type, ItemOverdue::full_name());
        assert!(published(member, &Change::LateFeeRestored { points: 10 }).is_none());
        let cleared = published(member, &Change::OverdueCleared { points: 10 }).expect("event");
        assert_eq!(cleared.event_type, OverdueCleared::full_name());
    }
}
