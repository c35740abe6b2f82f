//! A member's saga history (GetRentalHistory): per item on the card, every step of its saga in
//! time order, from the events the rental service published about the member (its outbox)
//! and the events it received for them (its saga steps).

use bookmesh::events::{Event, decode};
use bookmesh::proto::rental::v1::{
    ItemRented, ItemReturned, RentCanceled, RentConfirmed, ReturnCanceled,
};
use chrono::{DateTime, Utc};

use crate::domain::{RentalCard, RentalItem};

/// One step of a saga: an event published or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub event_type: String,
    pub event_id: String,
    pub producer: String,
    pub at: DateTime<Utc>,
    /// What happened, for people.
    pub detail: String,
}

/// A step the rental service received, and the item it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub item_id: String,
    pub step: Step,
}

/// What a history is built from.
pub struct History {
    pub card: RentalCard,
    /// The events the rental service wrote about the member, oldest first.
    pub published: Vec<Event>,
    pub received: Vec<Received>,
}

/// One item's saga.
pub struct Saga<'a> {
    pub item: &'a RentalItem,
    pub steps: Vec<Step>,
}

impl History {
    /// One saga per item on the card, oldest item first, each with its steps in time order.
    pub fn sagas(&self) -> Vec<Saga<'_>> {
        let mut steps: std::collections::HashMap<String, Vec<Step>> =
            std::collections::HashMap::new();
        for event in &self.published {
            if let Some((item_id, detail)) = published_step(event) {
                steps.entry(item_id).or_default().push(Step {
                    event_type: event.event_type.clone(),
                    event_id: event.event_id.clone(),
                    producer: event.producer.clone(),
                    at: occurred_at(event),
                    detail,
                });
            }
        }
        for received in &self.received {
            steps
                .entry(received.item_id.clone())
                .or_default()
                .push(received.step.clone());
        }
        self.card
            .items
            .iter()
            .map(|item| {
                let mut item_steps = steps.remove(&item.item_id.to_string()).unwrap_or_default();
                item_steps.sort_by_key(|step| step.at);
                Saga {
                    item,
                    steps: item_steps,
                }
            })
            .collect()
    }
}

fn occurred_at(event: &Event) -> DateTime<Utc> {
    event
        .occurred_at
        .as_ref()
        .and_then(|at| DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?))
        .unwrap_or_default()
}

/// The item a published rental event is about, with a detail for people; `None` for events
/// that are not about an item (OverdueCleared) or do not decode.
fn published_step(event: &Event) -> Option<(String, String)> {
    if let Ok(Some(e)) = decode::<ItemRented>(event) {
        Some((e.item_id, "rented: item PENDING".into()))
    } else if let Ok(Some(e)) = decode::<RentConfirmed>(event) {
        Some((e.item_id, "rental confirmed: item RENTED".into()))
    } else if let Ok(Some(e)) = decode::<RentCanceled>(event) {
        Some((e.item_id, format!("rental canceled: {}", e.reason)))
    } else if let Ok(Some(e)) = decode::<ItemReturned>(event) {
        Some((e.item_id, format!("returned, late fee {}", e.late_fee)))
    } else if let Ok(Some(e)) = decode::<ReturnCanceled>(event) {
        Some((e.item_id, format!("return canceled: {}", e.reason)))
    } else {
        None
    }
}
