//! Rental-card rules, pure: no tonic, no sea-orm, and the clock is a parameter so tests can
//! move time. The store loads a card, one of these operations changes it, the store saves it.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// Most books a card may hold at once.
pub const MAX_HELD_ITEMS: usize = 5;
/// Loan period.
pub const LOAN_DAYS: i64 = 14;
/// Late fee, in points, per day a book is returned after its due date.
pub const LATE_FEE_PER_DAY: i64 = 10;

/// A UUID-valued identifier parsed at the edge.
pub fn parse_uuid(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| "must be a UUID such as 0190f5c2-7a4e-7cc1-b8e3-2f1d5b0c9a11".into())
}

/// Where an item is in the rental saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    Pending,
    Rented,
    ReturnPending,
    Returned,
    Canceled,
}

impl ItemState {
    /// Whether the member has, or is about to have, the book.
    pub fn is_held(self) -> bool {
        matches!(self, Self::Pending | Self::Rented | Self::ReturnPending)
    }
}

/// Whether the member may rent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardStatus {
    Available,
    Unavailable,
}

/// One book on a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RentalItem {
    pub item_id: Uuid,
    pub book_id: Uuid,
    pub title: String,
    pub rented_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub overdue: bool,
    pub state: ItemState,
    pub returned_at: Option<DateTime<Utc>>,
    pub late_fee: i64,
    /// Why the rental was canceled (compensation), for CANCELED items.
    pub cancel_reason: Option<String>,
}

impl RentalItem {
    /// Whole days past the due date at `now`; at least one for an overdue item, since marking
    /// an item overdue is itself a day's lateness.
    fn days_overdue(&self, now: DateTime<Utc>) -> i64 {
        (now - self.due_at).num_days().max(1)
    }
}

/// A rule that forbids the requested change; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    #[error("the rental card is unavailable: return overdue books and clear the late fee first")]
    CardUnavailable,
    #[error("the card already holds {MAX_HELD_ITEMS} books, the most allowed at once")]
    TooManyBooks,
    #[error("book {0} is already on the card")]
    AlreadyOnCard(Uuid),
    #[error("book {0} is not on the card")]
    NotOnCard(Uuid),
    #[error("book {0} is waiting for its return to be confirmed")]
    ReturnInProgress(Uuid),
    #[error("the rental of book {0} is not confirmed yet; try again in a moment")]
    RentPending(Uuid),
    #[error("item {item_id} is {state:?}, which this step of the saga cannot follow")]
    UnexpectedItemState { item_id: Uuid, state: ItemState },
    #[error("{0} books are still out: every book must be returned before clearing the late fee")]
    BooksOutstanding(usize),
    #[error("there is no late fee to clear")]
    NothingToClear,
    #[error("the late fee is {expected} points; exactly that amount must be paid")]
    WrongAmount { expected: i64 },
}

impl RuleViolation {
    /// A stable machine-readable name for clients (`google.rpc.PreconditionFailure.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CardUnavailable => "CARD_UNAVAILABLE",
            Self::TooManyBooks => "TOO_MANY_BOOKS",
            Self::AlreadyOnCard(_) => "ALREADY_ON_CARD",
            Self::NotOnCard(_) => "NOT_ON_CARD",
            Self::ReturnInProgress(_) => "RETURN_IN_PROGRESS",
            Self::RentPending(_) => "RENT_PENDING",
            Self::UnexpectedItemState { .. } => "UNEXPECTED_ITEM_STATE",
            Self::BooksOutstanding(_) => "BOOKS_OUTSTANDING",
            Self::NothingToClear => "NOTHING_TO_CLEAR",
            Self::WrongAmount { .. } => "WRONG_AMOUNT",
        }
    }
}

/// A member's rental card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RentalCard {
    pub member_id: Uuid,
    pub status: CardStatus,
    pub late_fee: i64,
    /// Every item ever put on the card, oldest first.
    pub items: Vec<RentalItem>,
}

impl RentalCard {
    /// The card created on a member's first rental.
    pub fn new(member_id: Uuid) -> Self {
        Self {
            member_id,
            status: CardStatus::Available,
            late_fee: 0,
            items: Vec::new(),
        }
    }

    pub fn held_items(&self) -> impl Iterator<Item = &RentalItem> {
        self.items.iter().filter(|item| item.state.is_held())
    }

    fn held_item_mut(&mut self, book_id: Uuid) -> Result<&mut RentalItem, RuleViolation> {
        self.items
            .iter_mut()
            .find(|item| item.book_id == book_id && item.state.is_held())
            .ok_or(RuleViolation::NotOnCard(book_id))
    }

    /// Brings the card up to `now`: books past their due date become overdue, and the status
    /// follows (UNAVAILABLE while a book is overdue or a late fee is unpaid).
    pub fn refresh(&mut self, now: DateTime<Utc>) {
        for item in self.items.iter_mut().filter(|item| item.state.is_held()) {
            if now > item.due_at {
                item.overdue = true;
            }
        }
        let blocked = self.late_fee > 0 || self.held_items().any(|item| item.overdue);
        self.status = if blocked {
            CardStatus::Unavailable
        } else {
            CardStatus::Available
        };
    }

    /// Puts a book on the card as PENDING, due in [`LOAN_DAYS`].
    pub fn rent(
        &mut self,
        book_id: Uuid,
        title: String,
        now: DateTime<Utc>,
    ) -> Result<&RentalItem, RuleViolation> {
        self.refresh(now);
        if self.status == CardStatus::Unavailable {
            return Err(RuleViolation::CardUnavailable);
        }
        if self.held_items().any(|item| item.book_id == book_id) {
            return Err(RuleViolation::AlreadyOnCard(book_id));
        }
        if self.held_items().count() >= MAX_HELD_ITEMS {
            return Err(RuleViolation::TooManyBooks);
        }
        self.items.push(RentalItem {
            item_id: Uuid::now_v7(),
            book_id,
            title,
            rented_at: now,
            due_at: now + Duration::days(LOAN_DAYS),
            overdue: false,
            state: ItemState::Pending,
            returned_at: None,
            late_fee: 0,
            cancel_reason: None,
        });
        let index = self.items.len() - 1;
        Ok(&self.items[index])
    }

    /// Starts a return: the RENTED item becomes RETURN_PENDING until the book service confirms
    /// the copy is back, and a late return adds [`LATE_FEE_PER_DAY`] per day overdue. Returns
    /// the late fee charged for this book.
    pub fn return_book(&mut self, book_id: Uuid, now: DateTime<Utc>) -> Result<i64, RuleViolation> {
        self.refresh(now);
        let item = self.held_item_mut(book_id)?;
        match item.state {
            ItemState::ReturnPending => return Err(RuleViolation::ReturnInProgress(book_id)),
            ItemState::Pending => return Err(RuleViolation::RentPending(book_id)),
            _ => {}
        }
        let fee = if item.overdue {
            item.days_overdue(now) * LATE_FEE_PER_DAY
        } else {
            0
        };
        item.state = ItemState::ReturnPending;
        item.returned_at = Some(now);
        item.late_fee = fee;
        self.late_fee += fee;
        self.refresh(now);
        Ok(fee)
    }

    /// Saga step: the book service took the copy back; the return is complete. Returns whether
    /// anything changed.
    pub fn confirm_return(
        &mut self,
        item_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, RuleViolation> {
        let item = self.item_mut(item_id)?;
        let changed = match item.state {
            ItemState::ReturnPending => {
                item.state = ItemState::Returned;
                true
            }
            ItemState::Returned => false,
            state => return Err(RuleViolation::UnexpectedItemState { item_id, state }),
        };
        self.refresh(now);
        Ok(changed)
    }

    /// Saga compensation: the book service rejected the return, so the item is RENTED again
    /// and its late fee is removed. Returns whether anything changed.
    pub fn cancel_return(
        &mut self,
        item_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, RuleViolation> {
        let item = self.item_mut(item_id)?;
        let removed_fee = match item.state {
            ItemState::ReturnPending => {
                item.state = ItemState::Rented;
                item.returned_at = None;
                std::mem::take(&mut item.late_fee)
            }
            ItemState::Rented => return Ok(false),
            state => return Err(RuleViolation::UnexpectedItemState { item_id, state }),
        };
        self.late_fee = (self.late_fee - removed_fee).max(0);
        self.refresh(now);
        Ok(true)
    }

    /// Saga compensation: the member could not pay the cleared late fee, so it is owed again
    /// (and the card UNAVAILABLE).
    pub fn restore_late_fee(&mut self, points: i64, now: DateTime<Utc>) {
        self.late_fee += points.max(0);
        self.refresh(now);
    }

    /// The item with `item_id`, whatever its state.
    fn item_mut(&mut self, item_id: Uuid) -> Result<&mut RentalItem, RuleViolation> {
        self.items
            .iter_mut()
            .find(|item| item.item_id == item_id)
            .ok_or(RuleViolation::NotOnCard(item_id))
    }

    /// Saga step: the book service reserved the book, so the PENDING item is RENTED. Returns
    /// whether anything changed (a redelivered confirmation changes nothing).
    pub fn confirm_rent(
        &mut self,
        item_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, RuleViolation> {
        let item = self.item_mut(item_id)?;
        let changed = match item.state {
            ItemState::Pending => {
                item.state = ItemState::Rented;
                true
            }
            ItemState::Rented => false,
            state => return Err(RuleViolation::UnexpectedItemState { item_id, state }),
        };
        self.refresh(now);
        Ok(changed)
    }

    /// Saga compensation: the book could not be reserved, so the PENDING item is CANCELED
    /// with `reason`. Returns whether anything changed.
    pub fn cancel_rent(
        &mut self,
        item_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, RuleViolation> {
        let item = self.item_mut(item_id)?;
        let changed = match item.state {
            ItemState::Pending => {
                item.state = ItemState::Canceled;
                item.cancel_reason = Some(reason.to_owned());
                true
            }
            ItemState::Canceled => false,
            state => return Err(RuleViolation::UnexpectedItemState { item_id, state }),
        };
        self.refresh(now);
        Ok(changed)
    }

    /// Operator action: the book is due yesterday (unless it was due even earlier), so it is
    /// overdue and the card UNAVAILABLE. Marking it again changes nothing.
    pub fn mark_overdue(&mut self, book_id: Uuid, now: DateTime<Utc>) -> Result<(), RuleViolation> {
        let item = self.held_item_mut(book_id)?;
        item.due_at = item.due_at.min(now - Duration::days(1));
        item.overdue = true;
        self.refresh(now);
        Ok(())
    }

    /// Pays the late fee with `points`, which must match it exactly, once every book is back.
    pub fn clear_overdue(&mut self, points: i64, now: DateTime<Utc>) -> Result<(), RuleViolation> {
        self.refresh(now);
        let outstanding = self.held_items().count();
        if outstanding > 0 {
            return Err(RuleViolation::BooksOutstanding(outstanding));
        }
        if self.late_fee == 0 {
            return Err(RuleViolation::NothingToClear);
        }
        if points != self.late_fee {
            return Err(RuleViolation::WrongAmount {
                expected: self.late_fee,
            });
        }
        self.late_fee = 0;
        self.refresh(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-10T09:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn card() -> RentalCard {
        RentalCard::new(Uuid::now_v7())
    }

    /// Returns a book and confirms it, as the saga does once the book service took it back.
    fn give_back(
        card: &mut RentalCard,
        book: Uuid,
        now: DateTime<Utc>,
    ) -> Result<i64, RuleViolation> {
        let fee = card.return_book(book, now)?;
        let item_id = card
            .items
            .iter()
            .find(|item| item.book_id == book && item.state == ItemState::ReturnPending)
            .expect("return pending")
            .item_id;
        card.confirm_return(item_id, now).expect("confirm return");
        Ok(fee)
    }

    /// Rents a book and confirms it, as the saga does once the book service reserved it.
    fn rent(card: &mut RentalCard, now: DateTime<Utc>) -> Uuid {
        let book = Uuid::now_v7();
        let item_id = card.rent(book, "A book".into(), now).expect("rent").item_id;
        card.confirm_rent(item_id, now).expect("confirm");
        book
    }

    #[test]
    fn rented_items_are_pending_and_due_in_fourteen_days() {
        let mut card = card();
        let book = Uuid::now_v7();
        card.rent(book, "A book".into(), t0()).expect("rent");
        let item = &card.items[0];
        assert_eq!(item.book_id, book);
        assert_eq!(item.state, ItemState::Pending);
        assert_eq!(item.due_at, t0() + Duration::days(14));
        assert_eq!(card.status, CardStatus::Available);
    }

    #[test]
    fn at_most_five_books_at_once() {
        let mut card = card();
        for _ in 0..MAX_HELD_ITEMS {
            rent(&mut card, t0());
        }
        let sixth = card.rent(Uuid::now_v7(), "Sixth".into(), t0());
        assert_eq!(sixth, Err(RuleViolation::TooManyBooks));
        assert_eq!(card.items.len(), MAX_HELD_ITEMS);
        // Returning one frees a slot.
        let first = card.items[0].book_id;
        give_back(&mut card, first, t0()).expect("return");
        assert!(card.rent(Uuid::now_v7(), "Sixth".into(), t0()).is_ok());
    }

    #[test]
    fn same_book_twice_is_refused() {
        let mut card = card();
        let book = rent(&mut card, t0());
        assert_eq!(
            card.rent(book, "Again".into(), t0()),
            Err(RuleViolation::AlreadyOnCard(book))
        );
    }

    #[test]
    fn on_time_return_costs_nothing() {
        let mut card = card();
        let book = rent(&mut card, t0());
        let fee = give_back(&mut card, book, t0() + Duration::days(14)).expect("return");
        assert_eq!(fee, 0);
        assert_eq!(card.items[0].state, ItemState::Returned);
        assert_eq!(card.status, CardStatus::Available);
        assert_eq!(
            give_back(&mut card, book, t0()),
            Err(RuleViolation::NotOnCard(book))
        );
    }

    #[test]
    fn a_book_past_its_due_date_blocks_the_card_and_costs_ten_points_a_day() {
        let mut card = card();
        let book = rent(&mut card, t0());
        let three_days_late = t0() + Duration::days(17) + Duration::hours(1);
        card.refresh(three_days_late);
        assert!(card.items[0].overdue);
        assert_eq!(card.status, CardStatus::Unavailable);
        assert_eq!(
            card.rent(Uuid::now_v7(), "More".into(), three_days_late),
            Err(RuleViolation::CardUnavailable)
        );
        assert_eq!(give_back(&mut card, book, three_days_late), Ok(30));
        assert_eq!(card.late_fee, 30);
        // Still unavailable until the fee is paid.
        assert_eq!(card.status, CardStatus::Unavailable);
    }

    #[test]
    fn marking_overdue_makes_the_book_one_day_late() {
        let mut card = card();
        let book = rent(&mut card, t0());
        card.mark_overdue(book, t0()).expect("mark");
        card.mark_overdue(book, t0()).expect("idempotent");
        assert_eq!(card.items[0].due_at, t0() - Duration::days(1));
        assert_eq!(card.status, CardStatus::Unavailable);
        assert_eq!(give_back(&mut card, book, t0()), Ok(LATE_FEE_PER_DAY));
    }

    #[test]
    fn clearing_needs_every_book_back_and_the_exact_fee() {
        let mut card = card();
        let late = rent(&mut card, t0());
        let other = rent(&mut card, t0());
        card.mark_overdue(late, t0()).expect("mark");
        give_back(&mut card, late, t0()).expect("return");
        assert_eq!(
            card.clear_overdue(10, t0()),
            Err(RuleViolation::BooksOutstanding(1))
        );
        give_back(&mut card, other, t0()).expect("return");
        assert_eq!(
            card.clear_overdue(5, t0()),
            Err(RuleViolation::WrongAmount { expected: 10 })
        );
        assert_eq!(card.status, CardStatus::Unavailable);
        card.clear_overdue(10, t0()).expect("clear");
        assert_eq!((card.late_fee, card.status), (0, CardStatus::Available));
        assert_eq!(
            card.clear_overdue(10, t0()),
            Err(RuleViolation::NothingToClear)
        );
    }

    #[test]
    fn a_rejected_return_puts_the_item_back_and_removes_its_fee() {
        let mut card = card();
        let book = rent(&mut card, t0());
        card.mark_overdue(book, t0()).expect("mark");
        assert_eq!(card.return_book(book, t0()), Ok(10));
        assert_eq!(card.items[0].state, ItemState::ReturnPending);
        assert_eq!(
            card.clear_overdue(10, t0()),
            Err(RuleViolation::BooksOutstanding(1)),
            "a return in progress is not a return yet"
        );
        let item_id = card.items[0].item_id;
        assert_eq!(card.cancel_return(item_id, t0()), Ok(true));
        assert_eq!(card.cancel_return(item_id, t0()), Ok(false));
        assert_eq!((card.items[0].state, card.late_fee), (ItemState::Rented, 0));
        assert_eq!(card.items[0].returned_at, None);
        // Still overdue, so still unavailable.
        assert_eq!(card.status, CardStatus::Unavailable);
    }

    #[test]
    fn an_unpaid_clearance_restores_the_fee() {
        let mut card = card();
        let book = rent(&mut card, t0());
        card.mark_overdue(book, t0()).expect("mark");
        give_back(&mut card, book, t0()).expect("return");
        card.clear_overdue(10, t0()).expect("clear");
        assert_eq!(card.status, CardStatus::Available);
        card.restore_late_fee(10, t0());
        assert_eq!((card.late_fee, card.status), (10, CardStatus::Unavailable));
    }

    #[test]
    fn a_pending_rental_cannot_be_returned_until_confirmed() {
        let mut card = card();
        let book = Uuid::now_v7();
        let item_id = card
            .rent(book, "A book".into(), t0())
            .expect("rent")
            .item_id;
        assert_eq!(
            give_back(&mut card, book, t0()),
            Err(RuleViolation::RentPending(book))
        );
        assert_eq!(card.confirm_rent(item_id, t0()), Ok(true));
        assert_eq!(
            card.confirm_rent(item_id, t0()),
            Ok(false),
            "redelivery changes nothing"
        );
        assert_eq!(give_back(&mut card, book, t0()), Ok(0));
    }

    #[test]
    fn a_rejected_reservation_cancels_the_item_and_frees_its_slot() {
        let mut card = card();
        let book = Uuid::now_v7();
        let item_id = card
            .rent(book, "A book".into(), t0())
            .expect("rent")
            .item_id;
        assert_eq!(
            card.cancel_rent(item_id, "book is not available", t0()),
            Ok(true)
        );
        assert_eq!(card.cancel_rent(item_id, "again", t0()), Ok(false));
        assert_eq!(card.items[0].state, ItemState::Canceled);
        assert_eq!(
            card.items[0].cancel_reason.as_deref(),
            Some("book is not available")
        );
        assert_eq!(card.held_items().count(), 0);
        assert!(matches!(
            card.confirm_rent(item_id, t0()),
            Err(RuleViolation::UnexpectedItemState { .. })
        ));
        // The same book can be asked for again.
        assert!(card.rent(book, "A book".into(), t0()).is_ok());
    }

    #[test]
    fn unknown_books_cannot_be_returned_or_marked() {
        let mut card = card();
        let stranger = Uuid::now_v7();
        assert_eq!(
            give_back(&mut card, stranger, t0()),
            Err(RuleViolation::NotOnCard(stranger))
        );
        assert_eq!(
            card.mark_overdue(stranger, t0()),
            Err(RuleViolation::NotOnCard(stranger))
        );
    }
}
