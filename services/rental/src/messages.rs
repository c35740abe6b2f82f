//! The rental service's state as protobuf messages, for the API's answers and the history
//! stream: one place for the conversion, shared by `api` and `watch`.

use bookmesh::proto::rental::v1 as pb;
use bookmesh::proto::timestamp;

use crate::domain::{CardStatus, ItemState, RentalCard, RentalItem};
use crate::history::History;

fn item_message(item: &RentalItem) -> pb::RentalItem {
    let state = state_message(item.state);
    pb::RentalItem {
        book_id: item.book_id.to_string(),
        title: item.title.clone(),
        rented_at: Some(timestamp(item.rented_at)),
        due_at: Some(timestamp(item.due_at)),
        overdue: item.overdue,
        state: state.into(),
        returned_at: item.returned_at.map(timestamp),
        late_fee: item.late_fee,
        cancel_reason: item.cancel_reason.clone().unwrap_or_default(),
    }
}

/// The card as a message: the books held, and `history` (finished items, newest first; a
/// write's answer passes none).
pub(crate) fn card_message(card: &RentalCard, history: &[RentalItem]) -> pb::RentalCard {
    let status = match card.status {
        CardStatus::Available => pb::RentalStatus::Available,
        CardStatus::Unavailable => pb::RentalStatus::Unavailable,
    };
    pb::RentalCard {
        member_id: card.member_id.to_string(),
        status: status.into(),
        late_fee: card.late_fee,
        late_fee_in_payment: card.late_fee_in_payment,
        late_fee_in_payment_since: card.late_fee_in_payment_since.map(timestamp),
        rented_items: card.held_items().map(item_message).collect(),
        returned_items: history
            .iter()
            .filter(|item| item.state == ItemState::Returned)
            .map(item_message)
            .collect(),
        canceled_items: history
            .iter()
            .filter(|item| item.state == ItemState::Canceled)
            .map(item_message)
            .collect(),
    }
}

fn state_message(state: ItemState) -> pb::ItemState {
    match state {
        ItemState::Pending => pb::ItemState::Pending,
        ItemState::Rented => pb::ItemState::Rented,
        ItemState::ReturnPending => pb::ItemState::ReturnPending,
        ItemState::Returned => pb::ItemState::Returned,
        ItemState::Canceled => pb::ItemState::Canceled,
    }
}

/// One saga per item, its steps (published and received events) in time order.
pub(crate) fn saga_messages(history: &History) -> Vec<pb::RentalSaga> {
    history
        .sagas()
        .into_iter()
        .map(|saga| pb::RentalSaga {
            item_id: saga.item.item_id.to_string(),
            book_id: saga.item.book_id.to_string(),
            title: saga.item.title.clone(),
            state: state_message(saga.item.state).into(),
            cancel_reason: saga.item.cancel_reason.clone().unwrap_or_default(),
            steps: saga
                .steps
                .into_iter()
                .map(|step| pb::SagaStep {
                    event_type: step.event_type,
                    event_id: step.event_id,
                    producer: step.producer,
                    at: Some(timestamp(step.at)),
                    detail: step.detail,
                })
                .collect(),
        })
        .collect()
}
