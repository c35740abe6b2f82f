//! The event envelope and its payloads. A payload's type name comes from the generated code
//! (`prost::Name`, enabled in `build.rs`), so no list of event types is kept by hand and the
//! platform knows no service's events.

pub use crate::proto::events::v1::Event;

/// A protobuf message that can travel as an event payload: any generated message (each knows
/// its fully qualified name, which becomes the envelope's `event_type`).
pub trait EventPayload: prost::Name + Default {}

impl<T: prost::Name + Default> EventPayload for T {}

/// An event about to be written to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The payload's fully qualified protobuf name, `bookmesh.rental.v1.ItemRented`.
    pub event_type: String,
    /// What the event is about (a member, a book); events of one aggregate keep their order.
    pub aggregate_id: String,
    /// The encoded payload message.
    pub payload: Vec<u8>,
}

impl NewEvent {
    /// The event `payload` about `aggregate_id`.
    pub fn new<P: EventPayload>(aggregate_id: impl ToString, payload: &P) -> Self {
        Self {
            event_type: P::full_name(),
            aggregate_id: aggregate_id.to_string(),
            payload: payload.encode_to_vec(),
        }
    }
}

/// Whether `event_type` names the payload type `P`.
pub fn is<P: EventPayload>(event_type: &str) -> bool {
    // Compared piecewise: `full_name()` allocates, and every consumer asks this per event.
    event_type
        .strip_prefix(P::PACKAGE)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|name| name == P::NAME)
}

/// The payload of `event` if it is a `P`; `None` for other types; an error if it claims to be a
/// `P` but does not decode.
pub fn decode<P: EventPayload>(event: &Event) -> Result<Option<P>, prost::DecodeError> {
    if !is::<P>(&event.event_type) {
        return Ok(None);
    }
    let bytes = event
        .payload
        .as_ref()
        .map(|any| any.value.as_slice())
        .unwrap_or_default();
    P::decode(bytes).map(Some)
}

/// The type URL of a payload in the envelope's `Any`.
pub fn type_url(event_type: &str) -> String {
    format!("type.googleapis.com/{event_type}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rental::v1::{ItemRented, RentConfirmed};
    use prost::Name as _;

    #[test]
    fn the_event_type_is_the_generated_full_name() {
        let event = NewEvent::new("m", &ItemRented::default());
        assert_eq!(event.event_type, "bookmesh.rental.v1.ItemRented");
        assert!(is::<ItemRented>(&event.event_type));
        assert!(!is::<RentConfirmed>(&event.event_type));
        assert!(!is::<ItemRented>("bookmesh.rental.v1.ItemRentedX"));
        assert!(!is::<ItemRented>("ItemRented"));
        assert_eq!(
            type_url(&event.event_type),
            format!("type.googleapis.com/{}", ItemRented::full_name())
        );
    }

    #[test]
    fn decode_takes_only_its_own_type() {
        let rented = ItemRented {
            item_id: "i".into(),
            ..ItemRented::default()
        };
        let event = Event {
            event_type: ItemRented::full_name(),
            payload: Some(prost_types::Any {
                type_url: ItemRented::type_url(),
                value: prost::Message::encode_to_vec(&rented),
            }),
            ..Event::default()
        };
        assert_eq!(decode::<ItemRented>(&event), Ok(Some(rented)));
        assert_eq!(decode::<RentConfirmed>(&event), Ok(None));
    }
}
