//! What loadgen believes about the library, so that its members behave like real ones: they
//! rent only books that are on the shelf, return only what they hold (once the rental is
//! confirmed), and stay under the five-book limit. Then most calls succeed, and the figures
//! measure the mesh rather than its refusals.
//!
//! Pure bookkeeping, no I/O: the scenario asks for the next operation ([`Library::plan`]) and
//! reports how it ended ([`Library::finish`]). A rented book becomes returnable, and a returned
//! book rentable again, only after `settle` (the saga's time to confirm): a return sent before
//! the rental was confirmed would be refused (RENT_PENDING), a rent of a book whose return the
//! book service has not seen yet too (not available).

use std::time::{Duration, Instant};

/// Books a card may hold at once (the rental service's rule).
pub const MAX_BOOKS_PER_CARD: usize = 5;

/// An operation chosen for one member and, for rents and returns, one book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    Read { member: usize },
    Rent { member: usize, book: usize },
    Return { member: usize, book: usize },
}

/// Where a book is, as loadgen knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shelf {
    /// Free since this instant (rentable once settled).
    Free(Instant),
    /// A rent or return of it is in flight.
    Busy,
    /// Held by a member since this instant (returnable once settled).
    Held { member: usize, since: Instant },
    /// Given back by a member at this instant: on their card (RETURN_PENDING, counting
    /// against their limit) until the book service confirms, then free.
    Returning { member: usize, since: Instant },
}

/// How a planned operation ended, as far as the model cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    /// The rules refused it: the model's belief was wrong, and is corrected.
    Refused(Refusal),
    /// The call failed (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED…): it may or may not have
    /// happened.
    Failed,
}

/// Which rule refused, as far as the model can tell from the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// NOT_FOUND: not on the card (a return), or no card (a read).
    NotThere,
    /// ALREADY_EXISTS: the book is on the member's card already (a rent).
    AlreadyThere,
    /// FAILED_PRECONDITION: not yet (a rental not confirmed, a book not back on the shelf)
    /// or not allowed (the limit, an unavailable card).
    NotNow,
}

pub struct Library {
    books: Vec<Shelf>,
    /// Books held, in flight or being returned per member (the five-book limit counts them).
    load: Vec<usize>,
    /// Members who rented at least once (a card exists): reads ask for their cards.
    with_card: Vec<usize>,
    settle: Duration,
}

impl Library {
    /// `members` members holding nothing and `books` books on the shelf, settled.
    pub fn new(members: usize, books: usize, settle: Duration, now: Instant) -> Self {
        let settled = now.checked_sub(settle).unwrap_or(now);
        Self {
            books: vec![Shelf::Free(settled); books],
            load: vec![0; members],
            with_card: Vec::new(),
            settle,
        }
    }

    /// Records that `member` already holds `book` (read from their card at start).
    pub fn holds(&mut self, member: usize, book: usize, now: Instant) {
        if let Some(shelf) = self.books.get_mut(book) {
            *shelf = Shelf::Held {
                member,
                since: now.checked_sub(self.settle).unwrap_or(now),
            };
            self.load[member] += 1;
            self.card_exists(member);
        }
    }

    fn card_exists(&mut self, member: usize) {
        if !self.with_card.contains(&member) {
            self.with_card.push(member);
        }
    }

    /// Returns older than `settle` are done: the book is free, the member's slot too.
    fn settle_returns(&mut self, now: Instant) {
        for shelf in &mut self.books {
            if let Shelf::Returning { member, since } = *shelf
                && now.duration_since(since) >= self.settle
            {
                *shelf = Shelf::Free(since);
                self.load[member] -= 1;
            }
        }
    }

    /// The next operation of the kind `wanted` picks (a read when a rent or return has no
    /// candidate: everyone at the limit, nothing free, nothing returnable). `pick(n)` chooses
    /// uniformly below `n`.
    pub fn plan(
        &mut self,
        wanted: Want,
        now: Instant,
        pick: &mut impl FnMut(usize) -> usize,
    ) -> Planned {
        self.settle_returns(now);
        let member = pick(self.load.len());
        // Members look at their card once they have one; so does a member with nothing to
        // rent or return right now.
        let read = |pick: &mut dyn FnMut(usize) -> usize, with_card: &[usize]| Planned::Read {
            member: if with_card.is_empty() {
                member
            } else {
                with_card[pick(with_card.len())]
            },
        };
        match wanted {
            Want::Read => read(pick, &self.with_card),
            Want::Rent => {
                let Some(member) = self.member_under_limit(member) else {
                    return read(pick, &self.with_card);
                };
                let free: Vec<usize> = self
                    .books
                    .iter()
                    .enumerate()
                    .filter(|(_, shelf)| matches!(shelf, Shelf::Free(since) if now.duration_since(*since) >= self.settle))
                    .map(|(book, _)| book)
                    .collect();
                if free.is_empty() {
                    return read(pick, &self.with_card);
                }
                let book = free[pick(free.len())];
                self.books[book] = Shelf::Busy;
                self.load[member] += 1;
                Planned::Rent { member, book }
            }
            Want::Return => {
                let held: Vec<(usize, usize)> = self
                    .books
                    .iter()
                    .enumerate()
                    .filter_map(|(book, shelf)| match shelf {
                        Shelf::Held { member, since }
                            if now.duration_since(*since) >= self.settle =>
                        {
                            Some((*member, book))
                        }
                        _ => None,
                    })
                    .collect();
                if held.is_empty() {
                    return read(pick, &self.with_card);
                }
                let (member, book) = held[pick(held.len())];
                self.books[book] = Shelf::Busy;
                Planned::Return { member, book }
            }
        }
    }

    /// A member under the limit, starting the search at `start` (members at the limit pass
    /// their turn to the next one).
    fn member_under_limit(&self, start: usize) -> Option<usize> {
        let n = self.load.len();
        (0..n)
            .map(|offset| (start + offset) % n)
            .find(|member| self.load[*member] < MAX_BOOKS_PER_CARD)
    }

    /// Updates the model with how `planned` ended.
    pub fn finish(&mut self, planned: &Planned, ended: Ended, now: Instant) {
        match *planned {
            Planned::Read { .. } => {}
            Planned::Rent { member, book } => match ended {
                Ended::Succeeded | Ended::Refused(Refusal::AlreadyThere) => {
                    self.books[book] = Shelf::Held { member, since: now };
                    self.card_exists(member);
                }
                // Refused: not on the card. Failed: maybe on the card, maybe not; putting it
                // back on the shelf costs at worst one refused rent later.
                Ended::Refused(_) | Ended::Failed => {
                    self.books[book] = Shelf::Free(now);
                    self.load[member] -= 1;
                }
            },
            Planned::Return { member, book } => match ended {
                Ended::Succeeded => self.books[book] = Shelf::Returning { member, since: now },
                // Not on the card after all.
                Ended::Refused(Refusal::NotThere) => {
                    self.books[book] = Shelf::Free(now);
                    self.load[member] -= 1;
                }
                // Not confirmed yet, or maybe returned, maybe not: try again later.
                Ended::Refused(_) | Ended::Failed => {
                    self.books[book] = Shelf::Held { member, since: now };
                }
            },
        }
    }

    /// Books held by members now (for the report).
    pub fn held(&self) -> usize {
        self.books
            .iter()
            .filter(|shelf| matches!(shelf, Shelf::Held { .. }))
            .count()
    }
}

/// What the mix asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Rent,
    Return,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(n: usize) -> usize {
        let _ = n;
        0
    }

    #[test]
    fn a_member_rents_only_free_books_and_never_more_than_five() {
        let now = Instant::now();
        let mut library = Library::new(1, 7, Duration::ZERO, now);
        let mut rented = Vec::new();
        for _ in 0..7 {
            match library.plan(Want::Rent, now, &mut first) {
                Planned::Rent { member, book } => {
                    library.finish(&Planned::Rent { member, book }, Ended::Succeeded, now);
                    rented.push(book);
                }
                Planned::Read { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rented, [0, 1, 2, 3, 4], "five distinct books, then reads");
        assert_eq!(library.held(), 5);
    }

    #[test]
    fn returns_wait_for_the_rental_to_settle_and_free_the_book() {
        let start = Instant::now();
        let settle = Duration::from_secs(1);
        let mut library = Library::new(2, 1, settle, start);
        let rent = library.plan(Want::Rent, start, &mut first);
        assert_eq!(rent, Planned::Rent { member: 0, book: 0 });
        // Nothing else is free for the other member meanwhile.
        assert!(matches!(
            library.plan(Want::Rent, start, &mut |_| 1),
            Planned::Read { .. }
        ));
        library.finish(&rent, Ended::Succeeded, start);
        // Not returnable before the saga had time to confirm it.
        assert!(matches!(
            library.plan(Want::Return, start, &mut first),
            Planned::Read { .. }
        ));
        let later = start + settle;
        let give_back = library.plan(Want::Return, later, &mut first);
        assert_eq!(give_back, Planned::Return { member: 0, book: 0 });
        library.finish(&give_back, Ended::Succeeded, later);
        assert_eq!(library.held(), 0);
        // Rentable again once the return settled.
        assert!(matches!(
            library.plan(Want::Rent, later, &mut first),
            Planned::Read { .. }
        ));
        assert!(matches!(
            library.plan(Want::Rent, later + settle, &mut first),
            Planned::Rent { book: 0, .. }
        ));
    }

    #[test]
    fn a_failed_or_refused_rent_puts_the_book_back_and_frees_the_slot() {
        let now = Instant::now();
        let mut library = Library::new(1, 1, Duration::ZERO, now);
        for ended in [Ended::Refused(Refusal::NotNow), Ended::Failed] {
            let rent = library.plan(Want::Rent, now, &mut first);
            assert!(matches!(rent, Planned::Rent { .. }));
            library.finish(&rent, ended, now);
            assert_eq!(library.held(), 0);
            assert_eq!(library.load[0], 0);
        }
        // Books found on a card at start count against the limit and can be returned; a
        // return refused as not confirmed yet keeps the book on the card.
        library.holds(0, 0, now);
        let give_back = library.plan(Want::Return, now, &mut first);
        assert_eq!(give_back, Planned::Return { member: 0, book: 0 });
        library.finish(&give_back, Ended::Refused(Refusal::NotNow), now);
        assert_eq!(library.held(), 1);
        // A rent refused because the book is on the card already: the member holds it.
        let mut library = Library::new(1, 1, Duration::ZERO, now);
        let rent = library.plan(Want::Rent, now, &mut first);
        library.finish(&rent, Ended::Refused(Refusal::AlreadyThere), now);
        assert_eq!((library.held(), library.load[0]), (1, 1));
    }
}
