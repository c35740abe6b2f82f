//! Rental-card rules, pure: no tonic, no sea-orm, and the clock is a parameter so tests can
//! move time. The store loads a card, one of these rules changes it and says what happened (a
//! [`Change`]), the store saves the card with the events `events.rs` makes of the change.

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

/// What a rule did to a card: the fact the rest of the service acts on (the events published,
/// the log line written), so nobody has to search the card for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A book went on the card, PENDING until the book service reserves the copy.
    Rented(RentalItem),
    /// The book service reserved the copy: the item is RENTED.
    RentConfirmed(RentalItem),
    /// The book service could not reserve it: the item is CANCELED, with the reason
    /// (compensation).
    RentCanceled(RentalItem),
    /// The member handed a book back: RETURN_PENDING until the book service takes the copy,
    /// with the item's late fee.
    ReturnStarted(RentalItem),
    /// The book service took the copy back: the item is RETURNED.
    ReturnConfirmed(RentalItem),
    /// The book service refused the copy: the item is RENTED again and its late fee removed
    /// (compensation).
    ReturnCanceled {
        /// The item as it is now.
        item: RentalItem,
        /// Why the book service refused.
        reason: String,
    },
    /// An operator marked the book overdue.
    MarkedOverdue(RentalItem),
    /// The member paid the late fee with `points`.
    OverdueCleared {
        /// The points the member pays.
        points: i64,
    },
    /// The member service deducted the cleared fee's points: the card is free again.
    LateFeePaid {
        /// The points paid.
        points: i64,
    },
    /// The member could not pay: the late fee is owed again (compensation).
    LateFeeRestored {
        /// The points owed again.
        points: i64,
    },
}

impl Change {
    /// The item the change is about, if it is about one.
    pub fn item(&self) -> Option<&RentalItem> {
        match self {
            Self::Rented(item)
            | Self::RentConfirmed(item)
            | Self::RentCanceled(item)
            | Self::ReturnStarted(item)
            | Self::ReturnConfirmed(item)
            | Self::ReturnCanceled { item, .. }
            | Self::MarkedOverdue(item) => Some(item),
            Self::OverdueCleared { .. }
            | Self::LateFeePaid { .. }
            | Self::LateFeeRestored { .. } => None,
        }
    }
}

/// A rule that forbids the requested change; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    #[error("book {0} is not available")]
    BookUnavailable(Uuid),
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
    #[error("a payment of {0} points is being confirmed; the card is free once it is")]
    PaymentPending(i64),
}

impl RuleViolation {
    /// A stable machine-readable name for clients (`google.rpc.PreconditionFailure.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BookUnavailable(_) => "BOOK_UNAVAILABLE",
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
            Self::PaymentPending(_) => "PAYMENT_PENDING",
        }
    }

    /// What the violation is about (`google.rpc.PreconditionFailure.subject`): the book for an
    /// unavailable book, the card otherwise.
    pub fn subject(&self) -> String {
        match self {
            Self::BookUnavailable(book_id) => format!("books/{book_id}"),
            _ => "rental-card".into(),
        }
    }
}

/// A member's rental card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RentalCard {
    pub member_id: Uuid,
    pub status: CardStatus,
    pub late_fee: i64,
    /// Points of a cleared late fee that the member service has not confirmed deducting yet.
    /// The card stays UNAVAILABLE meanwhile: a member who cannot pay must not rent in the
    /// gap before the compensation restores the fee.
    pub late_fee_in_payment: i64,
    /// When the payment of `late_fee_in_payment` began (`None` while nothing is paid): a
    /// payment the member service leaves unanswered for too long is reported as stuck.
    pub late_fee_in_payment_since: Option<DateTime<Utc>>,
    /// The items a rule may need, oldest first: every book held (PENDING, RENTED,
    /// RETURN_PENDING), and the finished item a saga step names. A card's history (returned
    /// and canceled items) grows without bound, so it is not loaded to apply a rule.
    pub items: Vec<RentalItem>,
}

impl RentalCard {
    /// The card created on a member's first rental.
    pub fn new(member_id: Uuid) -> Self {
        Self {
            member_id,
            status: CardStatus::Available,
            late_fee: 0,
            late_fee_in_payment: 0,
            late_fee_in_payment_since: None,
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
        let blocked = self.late_fee > 0
            || self.late_fee_in_payment > 0
            || self.held_items().any(|item| item.overdue);
        self.status = if blocked {
            CardStatus::Unavailable
        } else {
            CardStatus::Available
        };
    }

    /// Why a book the book service reports as out cannot be rented on this card: it is here
    /// already (a retried RentBook must hear what the first one would now), or someone else
    /// has it.
    pub fn refuse_unavailable(&self, book_id: Uuid) -> RuleViolation {
        if self.held_items().any(|item| item.book_id == book_id) {
            RuleViolation::AlreadyOnCard(book_id)
        } else {
            RuleViolation::BookUnavailable(book_id)
        }
    }

    /// Puts a book on the card as PENDING, due in [`LOAN_DAYS`].
    pub fn rent(
        &mut self,
        book_id: Uuid,
        title: String,
        now: DateTime<Utc>,
    ) -> Result<Change, RuleViolation> {
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
        Ok(Change::Rented(self.items[self.items.len() - 1].clone()))
    }

    /// Starts a return: the RENTED item becomes RETURN_PENDING until the book service confirms
    /// the copy is back, and a late return adds [`LATE_FEE_PER_DAY`] per day overdue (the
    /// item's `late_fee`). `None` for a repeat while the return is pending: a client retrying
    /// a ReturnBook whose answer it lost gets the same card back, and nothing changes.
    pub fn return_book(
        &mut self,
        book_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Change>, RuleViolation> {
        self.refresh(now);
        let item = self.held_item_mut(book_id)?;
        match item.state {
            ItemState::ReturnPending => return Ok(None),
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
        let returned = item.clone();
        self.late_fee += fee;
        self.refresh(now);
        Ok(Some(Change::ReturnStarted(returned)))
    }

    /// Saga step: the book service took the copy back; the return is complete. `None` when it
    /// already was (a redelivered confirmation).
    pub fn confirm_return(
        &mut self,
        item_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Change>, RuleViolation> {
        let item = self.item_mut(item_id)?;
        let change = match item.state {
            ItemState::ReturnPending => {
                item.state = ItemState::Returned;
                Some(Change::ReturnConfirmed(item.clone()))
            }
            ItemState::Returned => None,
            state => return Err(RuleViolation::UnexpectedItemState { item_id, state }),
        };
        self.refresh(now);
        Ok(change)
    }

    /// Saga compensation: the book service rejected the return for `reason`, so the item is
    /// RENTED again and its late fee is removed. `None` when it already was.
    pub fn cancel_return(
        &mut self,
        item_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Change>, RuleViolation> {
        let item = self.item_mut(item_id)?;
        let removed_fee = match item.state {
            ItemState::ReturnPending => {
                item.state = ItemState::Rented;
                item.returned_at = None;
                std::mem::take(&mut item.late_fee)
            }
            ItemState::Rented => return Ok(None),
            state => return Err(RuleViolation::UnexpectedItemState { item_id, state }),
        };
        let item = item.clone();
        self.late_fee = (self.late_fee - removed_fee).max(0);
        self.refresh(now);
        Ok(Some(Change::ReturnCanceled {
            item,
            reason: reason.to_owned(),
        }))
    }

    /// Saga step: the member service deducted the cleared fee's `points`, so the payment is
    /// complete (and the card AVAILABLE unless something else blocks it). `None` when nothing
    /// was being paid (a redelivered confirmation).
    pub fn confirm_payment(&mut self, points: i64, now: DateTime<Utc>) -> Option<Change> {
        if self.late_fee_in_payment == 0 {
            return None;
        }
        let points = points.clamp(0, self.late_fee_in_payment);
        self.late_fee_in_payment -= points;
        self.payment_settled();
        self.refresh(now);
        Some(Change::LateFeePaid { points })
    }

    /// Saga compensation: the member could not pay the cleared late fee, so it is owed again
    /// (and the card UNAVAILABLE). `None` when nothing was being paid (a redelivery).
    pub fn restore_late_fee(&mut self, points: i64, now: DateTime<Utc>) -> Option<Change> {
        if self.late_fee_in_payment == 0 {
            return None;
        }
        let points = points.clamp(0, self.late_fee_in_payment);
        self.late_fee_in_payment -= points;
        self.late_fee += points;
        self.payment_settled();
        self.refresh(now);
        Some(Change::LateFeeRestored { points })
    }

    fn payment_settled(&mut self) {
        if self.late_fee_in_payment == 0 {
            self.late_fee_in_payment_since = None;
        }
    }

    /// The item with `item_id`, whatever its state.
    fn item_mut(&mut self, item_id: Uuid) -> Result<&mut RentalItem, RuleViolation> {
        self.items
            .iter_mut()
            .find(|item| item.item_id == item_id)
            .ok_or(RuleViolation::NotOnCard(item_id))
    }

    /// Saga step: the book service reserved the book, so the PENDING item is RENTED. `None`
    /// when it already was (a redelivered confirmation changes nothing).
    pub fn confirm_rent(
        &mut self,
        item_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Change>, RuleViolation> {
        let item = self.item_mut(item_id)?;
        let change = match item.state {
            ItemState::Pending => {
                item.state = ItemState::Rented;
                Some(Change::RentConfirmed(item.clone()))
            }
            // The rental timed out before the book service answered: the book service frees
            // the copy when it reads the RentCanceled the timeout published.
            ItemState::Rented | ItemState::Canceled => None,
            state => return Err(RuleViolation::UnexpectedItemState { item_id, state }),
        };
        self.refresh(now);
        Ok(change)
    }

    /// Saga timeout: the book service has not answered a rental PENDING since before
    /// `cutoff`, so the rental is CANCELED with `reason` (and RentCanceled published: the
    /// member service takes its points back, the book service frees the copy if it reserved
    /// it meanwhile). `None` when the item is no longer pending (the answer came in time) or
    /// not that old.
    pub fn time_out_rent(
        &mut self,
        item_id: Uuid,
        cutoff: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Option<Change> {
        let item = self.items.iter_mut().find(|item| item.item_id == item_id)?;
        if item.state != ItemState::Pending || item.rented_at > cutoff {
            return None;
        }
        item.state = ItemState::Canceled;
        item.cancel_reason = Some(reason.to_owned());
        let canceled = item.clone();
        self.refresh(now);
        Some(Change::RentCanceled(canceled))
    }

    /// Saga compensation: the book could not be reserved, so the PENDING item is CANCELED
    /// with `reason`. `None` when it already was.
    pub fn cancel_rent(
        &mut self,
        item_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Change>, RuleViolation> {
        let item = self.item_mut(item_id)?;
        let change = match item.state {
            ItemState::Pending => {
                item.state = ItemState::Canceled;
                item.cancel_reason = Some(reason.to_owned());
                Some(Change::RentCanceled(item.clone()))
            }
            ItemState::Canceled => None,
            state => return Err(RuleViolation::UnexpectedItemState { item_id, state }),
        };
        self.refresh(now);
        Ok(change)
    }

    /// Operator action: the book is due yesterday (unless it was due even earlier), so it is
    /// overdue and the card UNAVAILABLE. Marking it again changes nothing. Only a RENTED book
    /// can be overdue: a PENDING rental is not the member's yet, and a RETURN_PENDING book is
    /// already back (its late fee was fixed when it was handed in).
    pub fn mark_overdue(
        &mut self,
        book_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Change, RuleViolation> {
        let item = self.held_item_mut(book_id)?;
        match item.state {
            ItemState::Pending => return Err(RuleViolation::RentPending(book_id)),
            ItemState::ReturnPending => return Err(RuleViolation::ReturnInProgress(book_id)),
            _ => {}
        }
        item.due_at = item.due_at.min(now - Duration::days(1));
        item.overdue = true;
        let marked = item.clone();
        self.refresh(now);
        Ok(Change::MarkedOverdue(marked))
    }

    /// Pays the late fee with `points`, which must match it exactly, once every book is back.
    /// The card stays UNAVAILABLE until the member service confirms the deduction
    /// ([`Self::confirm_payment`]) or refuses it ([`Self::restore_late_fee`]). `None` for a
    /// repeat of the same payment while it is being confirmed (a retried ClearOverdue).
    pub fn clear_overdue(
        &mut self,
        points: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Change>, RuleViolation> {
        self.refresh(now);
        if self.late_fee_in_payment > 0 {
            return if self.late_fee == 0 && points == self.late_fee_in_payment {
                Ok(None)
            } else {
                Err(RuleViolation::PaymentPending(self.late_fee_in_payment))
            };
        }
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
        self.late_fee_in_payment = points;
        self.late_fee_in_payment_since = Some(now);
        self.refresh(now);
        Ok(Some(Change::OverdueCleared { points }))
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

    /// The item a change is about.
    fn item_of(change: &Change) -> &RentalItem {
        change.item().expect("a change about an item")
    }

    /// The late fee a started return charged.
    fn late_fee(change: Change) -> i64 {
        match change {
            Change::ReturnStarted(item) => item.late_fee,
            other => panic!("not a return: {other:?}"),
        }
    }

    /// Returns a book and confirms it, as the saga does once the book service took it back.
    fn give_back(
        card: &mut RentalCard,
        book: Uuid,
        now: DateTime<Utc>,
    ) -> Result<i64, RuleViolation> {
        let started = card.return_book(book, now)?.expect("a return started");
        let item_id = item_of(&started).item_id;
        card.confirm_return(item_id, now).expect("confirm return");
        Ok(late_fee(started))
    }

    /// Rents a book and confirms it, as the saga does once the book service reserved it.
    fn rent(card: &mut RentalCard, now: DateTime<Utc>) -> Uuid {
        let book = Uuid::now_v7();
        let item_id = item_of(&card.rent(book, "A book".into(), now).expect("rent")).item_id;
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
        assert!(matches!(
            card.clear_overdue(10, t0()),
            Ok(Some(Change::OverdueCleared { points: 10 }))
        ));
        // Not free until the member service confirms the deduction.
        assert_eq!(
            (card.late_fee, card.late_fee_in_payment, card.status),
            (0, 10, CardStatus::Unavailable)
        );
        assert_eq!(card.clear_overdue(10, t0()), Ok(None), "a retried clear");
        assert_eq!(
            card.clear_overdue(7, t0()),
            Err(RuleViolation::PaymentPending(10))
        );
        assert!(card.rent(Uuid::now_v7(), "Too soon".into(), t0()).is_err());
        assert_eq!(
            card.confirm_payment(10, t0()),
            Some(Change::LateFeePaid { points: 10 })
        );
        assert_eq!(card.confirm_payment(10, t0()), None, "a redelivery");
        assert_eq!(
            (card.late_fee, card.late_fee_in_payment, card.status),
            (0, 0, CardStatus::Available)
        );
        assert_eq!(
            card.clear_overdue(10, t0()),
            Err(RuleViolation::NothingToClear)
        );
    }

    #[test]
    fn a_repeated_return_while_pending_changes_nothing() {
        let mut card = card();
        let book = rent(&mut card, t0());
        card.mark_overdue(book, t0()).expect("mark");
        assert!(matches!(card.return_book(book, t0()), Ok(Some(_))));
        let after_first = card.clone();
        assert_eq!(card.return_book(book, t0()), Ok(None));
        assert_eq!(card, after_first, "same card, same late fee");
        assert_eq!(card.late_fee, 10, "charged once");
    }

    #[test]
    fn only_a_rented_book_can_be_marked_overdue() {
        let mut card = card();
        let book = Uuid::now_v7();
        card.rent(book, "Pending".into(), t0()).expect("rent");
        assert_eq!(
            card.mark_overdue(book, t0()),
            Err(RuleViolation::RentPending(book))
        );
        let rented = rent(&mut card, t0());
        card.return_book(rented, t0()).expect("return");
        assert_eq!(
            card.mark_overdue(rented, t0()),
            Err(RuleViolation::ReturnInProgress(rented))
        );
        assert!(card.items.iter().all(|item| !item.overdue));
        assert_eq!(card.late_fee, 0);
    }

    #[test]
    fn a_rejected_return_puts_the_item_back_and_removes_its_fee() {
        let mut card = card();
        let book = rent(&mut card, t0());
        card.mark_overdue(book, t0()).expect("mark");
        assert_eq!(
            card.return_book(book, t0()).map(|c| c.map(late_fee)),
            Ok(Some(10))
        );
        assert_eq!(card.items[0].state, ItemState::ReturnPending);
        assert_eq!(
            card.clear_overdue(10, t0()),
            Err(RuleViolation::BooksOutstanding(1)),
            "a return in progress is not a return yet"
        );
        let item_id = card.items[0].item_id;
        let reason = "book is not rented out";
        assert!(matches!(
            card.cancel_return(item_id, reason, t0()),
            Ok(Some(Change::ReturnCanceled { .. }))
        ));
        assert_eq!(card.cancel_return(item_id, reason, t0()), Ok(None));
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
        assert_eq!(
            card.status,
            CardStatus::Unavailable,
            "until the deduction is confirmed"
        );
        assert!(card.rent(Uuid::now_v7(), "Meanwhile".into(), t0()).is_err());
        assert_eq!(
            card.restore_late_fee(10, t0()),
            Some(Change::LateFeeRestored { points: 10 })
        );
        assert_eq!(card.restore_late_fee(10, t0()), None, "a redelivery");
        assert_eq!(
            (card.late_fee, card.late_fee_in_payment, card.status),
            (10, 0, CardStatus::Unavailable)
        );
    }

    #[test]
    fn a_pending_rental_cannot_be_returned_until_confirmed() {
        let mut card = card();
        let book = Uuid::now_v7();
        let item_id = item_of(&card.rent(book, "A book".into(), t0()).expect("rent")).item_id;
        assert_eq!(
            give_back(&mut card, book, t0()),
            Err(RuleViolation::RentPending(book))
        );
        assert!(matches!(
            card.confirm_rent(item_id, t0()),
            Ok(Some(Change::RentConfirmed(_)))
        ));
        assert_eq!(
            card.confirm_rent(item_id, t0()),
            Ok(None),
            "redelivery changes nothing"
        );
        assert_eq!(give_back(&mut card, book, t0()), Ok(0));
    }

    #[test]
    fn a_rental_past_the_step_timeout_is_canceled_and_a_late_reservation_changes_nothing() {
        let mut card = card();
        let book = Uuid::now_v7();
        let item_id = item_of(&card.rent(book, "A book".into(), t0()).expect("rent")).item_id;
        let before_renting = t0() - Duration::seconds(1);
        assert_eq!(
            card.time_out_rent(item_id, before_renting, "timed out", t0()),
            None,
            "not that old yet"
        );
        let later = t0() + Duration::minutes(10);
        let Some(Change::RentCanceled(item)) =
            card.time_out_rent(item_id, t0(), "timed out", later)
        else {
            panic!("the rental times out");
        };
        assert_eq!(item.cancel_reason.as_deref(), Some("timed out"));
        assert_eq!(card.held_items().count(), 0, "its slot is free");
        assert_eq!(card.time_out_rent(item_id, t0(), "again", later), None);
        assert_eq!(
            card.confirm_rent(item_id, later),
            Ok(None),
            "the book service answers late: the copy is freed by RentCanceled, not here"
        );
        assert_eq!(card.items[0].state, ItemState::Canceled);
    }

    #[test]
    fn a_confirmed_rental_does_not_time_out() {
        let mut card = card();
        let book = Uuid::now_v7();
        let item_id = item_of(&card.rent(book, "A book".into(), t0()).expect("rent")).item_id;
        card.confirm_rent(item_id, t0()).expect("confirm");
        let later = t0() + Duration::minutes(10);
        assert_eq!(card.time_out_rent(item_id, later, "timed out", later), None);
        assert_eq!(card.items[0].state, ItemState::Rented);
    }

    #[test]
    fn a_payment_records_when_it_began_until_it_settles() {
        let mut card = card();
        let book = rent(&mut card, t0());
        card.mark_overdue(book, t0()).expect("mark");
        give_back(&mut card, book, t0()).expect("return");
        card.clear_overdue(10, t0()).expect("clear");
        assert_eq!(card.late_fee_in_payment_since, Some(t0()));
        card.confirm_payment(10, t0());
        assert_eq!(card.late_fee_in_payment_since, None);
    }

    #[test]
    fn a_rejected_reservation_cancels_the_item_and_frees_its_slot() {
        let mut card = card();
        let book = Uuid::now_v7();
        let item_id = item_of(&card.rent(book, "A book".into(), t0()).expect("rent")).item_id;
        assert!(matches!(
            card.cancel_rent(item_id, "book is not available", t0()),
            Ok(Some(Change::RentCanceled(_)))
        ));
        assert_eq!(card.cancel_rent(item_id, "again", t0()), Ok(None));
        assert_eq!(card.items[0].state, ItemState::Canceled);
        assert_eq!(
            card.items[0].cancel_reason.as_deref(),
            Some("book is not available")
        );
        assert_eq!(card.held_items().count(), 0);
        assert_eq!(card.confirm_rent(item_id, t0()), Ok(None));
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

    #[test]
    fn an_unavailable_book_is_refused_as_already_here_or_as_unavailable() {
        let mut card = card();
        let mine = rent(&mut card, t0());
        let theirs = Uuid::now_v7();
        assert_eq!(
            card.refuse_unavailable(mine),
            RuleViolation::AlreadyOnCard(mine)
        );
        assert_eq!(
            card.refuse_unavailable(theirs),
            RuleViolation::BookUnavailable(theirs)
        );
        assert_eq!(
            RuleViolation::BookUnavailable(theirs).subject(),
            format!("books/{theirs}")
        );
        give_back(&mut card, mine, t0()).expect("return");
        assert_eq!(
            card.refuse_unavailable(mine),
            RuleViolation::BookUnavailable(mine),
            "a returned book is someone else's now"
        );
    }
}
