//! Arbitrary bytes as a rental request, then as a sequence of operations on one card: every
//! rule and saga step, in any order, with any arguments, as retries, redeliveries and races
//! could bring them. Must never panic, and the card's invariants must hold after each step.
#![no_main]

use bookmesh::proto::rental::v1::RentBookRequest;
use chrono::{DateTime, Duration, Utc};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use rental_service::domain::{CardStatus, MAX_HELD_ITEMS, RentalCard, parse_uuid};
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let Some((&length, rest)) = data.split_first() else {
        return;
    };
    let (request, operations) = rest.split_at(usize::from(length).min(rest.len()));
    if let Ok(request) = RentBookRequest::decode(request) {
        let _ = parse_uuid(&request.member_id);
        let _ = parse_uuid(&request.book_id);
    }

    let books: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let mut card = RentalCard::new(Uuid::now_v7());
    let mut now: DateTime<Utc> = Utc::now();
    for step in operations.chunks(3) {
        let [op, a, b] = [
            step[0],
            *step.get(1).unwrap_or(&0),
            *step.get(2).unwrap_or(&0),
        ];
        let book = books[usize::from(a) % books.len()];
        let item = card
            .items
            .get(usize::from(a) % card.items.len().max(1))
            .map_or_else(Uuid::now_v7, |item| item.item_id);
        let points = i64::from(b) - 16;
        match op % 13 {
            0 => drop(card.rent(book, "t".into(), now)),
            1 => drop(card.confirm_rent(item, now)),
            2 => drop(card.cancel_rent(item, "no", now)),
            3 => drop(card.return_book(book, now)),
            4 => drop(card.confirm_return(item, now)),
            5 => drop(card.cancel_return(item, "no", now)),
            6 => drop(card.mark_overdue(book, now)),
            7 => drop(card.clear_overdue(points, now)),
            8 => drop(card.confirm_payment(points, now)),
            9 => drop(card.restore_late_fee(points, now)),
            10 => now += Duration::days(i64::from(b)),
            11 => drop(card.time_out_rent(item, now - Duration::minutes(i64::from(b)), "late", now)),
            _ => card.refresh(now),
        }
        assert!(card.late_fee >= 0, "late fee {}", card.late_fee);
        assert!(card.late_fee_in_payment >= 0);
        assert!(card.held_items().count() <= MAX_HELD_ITEMS);
        if card.late_fee > 0 || card.late_fee_in_payment > 0 {
            assert_eq!(card.status, CardStatus::Unavailable, "{card:?}");
        }
        // A payment in flight knows since when (the saga deadline reports it), and only then.
        assert_eq!(
            card.late_fee_in_payment > 0,
            card.late_fee_in_payment_since.is_some(),
            "{card:?}"
        );
    }
});
