//! The consistency check: after the sagas settle, do the services agree?
//!
//! It reads every service through its public API only (no database access: each database
//! belongs to its service) and checks the invariants the sagas must restore:
//! - a book is UNAVAILABLE exactly when one card holds it RENTED (or with a rent or return
//!   still settling), and no book is held by two cards;
//! - each member's points equal what the events award (10 per rental not canceled, 10 per
//!   completed return) minus the late fees paid (charged minus still owed);
//! - the best-seller count of each book equals its confirmed rentals.
//!
//! The system is eventually consistent, so callers poll [`check`] until it passes or a
//! deadline passes, and only then report the violations. A saga step still settling after
//! [`Endpoints::stuck_after`] is reported as stuck: a dependency that never answered.

use std::collections::HashMap;

use bookmesh::proto::bestbook::v1::GetBestBooksRequest;
use bookmesh::proto::bestbook::v1::best_book_service_client::BestBookServiceClient;
use bookmesh::proto::book::v1::book_service_client::BookServiceClient;
use bookmesh::proto::book::v1::{Book, BookStatus, ListBooksRequest};
use bookmesh::proto::member::v1::member_service_client::MemberServiceClient;
use bookmesh::proto::member::v1::{ListMembersRequest, Member};
use bookmesh::proto::rental::v1::rental_service_client::RentalServiceClient;
use bookmesh::proto::rental::v1::{GetRentalCardRequest, ItemState, RentalCard};
use tonic::transport::Channel;

/// Points per rental not canceled and per completed return (the member service's rule).
pub const POINTS_PER_RENTAL: i64 = 10;
pub const POINTS_PER_RETURN: i64 = 10;

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Who the check calls as: its own workload identity (`check`), or plaintext.
    pub identity: bookmesh::identity::Identity,
    pub book: String,
    pub member: String,
    pub rental: String,
    /// `None` skips the best-seller check.
    pub bestbook: Option<String>,
    /// A step settling for longer than this is stuck (the rental service's
    /// `--saga-step-timeout` is the same idea).
    pub stuck_after: std::time::Duration,
}

/// What the check found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub members: usize,
    pub books: usize,
    pub items: usize,
    /// Items still PENDING or RETURN_PENDING, and late-fee payments not yet confirmed: the
    /// sagas have not settled yet.
    pub settling: usize,
    /// The steps among them settling for longer than `stuck_after`, for people.
    pub stuck: Vec<String>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.settling == 0 && self.violations.is_empty()
    }
}

async fn channel(
    identity: &bookmesh::identity::Identity,
    url: &str,
    workload: &str,
) -> anyhow::Result<Channel> {
    identity
        .channel(url, workload)
        .await
        .map_err(|error| anyhow::anyhow!("{workload} at {url}: {error}"))
}

async fn all_members(
    identity: &bookmesh::identity::Identity,
    url: &str,
) -> anyhow::Result<Vec<Member>> {
    let mut client = MemberServiceClient::new(channel(identity, url, "member").await?);
    let (mut members, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_members(ListMembersRequest {
                page_size: 100,
                page_token: token,
            })
            .await?
            .into_inner();
        members.extend(page.members);
        if page.next_page_token.is_empty() {
            return Ok(members);
        }
        token = page.next_page_token;
    }
}

async fn all_books(
    identity: &bookmesh::identity::Identity,
    url: &str,
) -> anyhow::Result<Vec<Book>> {
    let mut client = BookServiceClient::new(channel(identity, url, "book").await?);
    let (mut books, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_books(ListBooksRequest {
                page_size: 100,
                page_token: token,
            })
            .await?
            .into_inner();
        books.extend(page.books);
        if page.next_page_token.is_empty() {
            return Ok(books);
        }
        token = page.next_page_token;
    }
}

/// The member's whole card, its history read page by page (`None`: never rented).
async fn whole_card(
    rental: &mut RentalServiceClient<Channel>,
    member_id: &str,
) -> anyhow::Result<Option<RentalCard>> {
    let mut whole: Option<RentalCard> = None;
    let mut page_token = String::new();
    loop {
        let answer = match rental
            .get_rental_card(GetRentalCardRequest {
                member_id: member_id.to_owned(),
                page_size: 100,
                page_token,
            })
            .await
        {
            Ok(answer) => answer.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(status.into()),
        };
        let Some(page) = answer.rental_card else {
            return Ok(whole);
        };
        match &mut whole {
            None => whole = Some(page),
            Some(card) => {
                card.returned_items.extend(page.returned_items);
                card.canceled_items.extend(page.canceled_items);
            }
        }
        if answer.next_page_token.is_empty() {
            return Ok(whole);
        }
        page_token = answer.next_page_token;
    }
}

/// Reads every service once and checks the invariants.
pub async fn check(endpoints: &Endpoints) -> anyhow::Result<Report> {
    let members = all_members(&endpoints.identity, &endpoints.member).await?;
    let books = all_books(&endpoints.identity, &endpoints.book).await?;
    let mut rental =
        RentalServiceClient::new(channel(&endpoints.identity, &endpoints.rental, "rental").await?);
    let mut cards: Vec<RentalCard> = Vec::new();
    for member in &members {
        cards.extend(whole_card(&mut rental, &member.member_id).await?);
    }

    let mut report = Report {
        members: members.len(),
        books: books.len(),
        ..Report::default()
    };
    // Who holds each book, and how many confirmed rentals each book had.
    let mut holders: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut confirmed: HashMap<&str, i64> = HashMap::new();
    let stuck_since = |since: Option<&prost_types::Timestamp>| {
        let since = since.and_then(|at| {
            chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
        })?;
        let waited = (chrono::Utc::now() - since).to_std().ok()?;
        (waited > endpoints.stuck_after).then_some(since)
    };
    for card in &cards {
        if card.late_fee_in_payment > 0 {
            report.settling += 1;
            if let Some(since) = stuck_since(card.late_fee_in_payment_since.as_ref()) {
                report.stuck.push(format!(
                    "member {}: late fee payment of {} points unconfirmed since {since} \
                     (the member service has not answered OverdueCleared)",
                    card.member_id, card.late_fee_in_payment
                ));
            }
        }
        for item in card
            .rented_items
            .iter()
            .chain(&card.returned_items)
            .chain(&card.canceled_items)
        {
            report.items += 1;
            let state = item.state();
            if matches!(state, ItemState::Pending | ItemState::ReturnPending) {
                report.settling += 1;
                let since = if state == ItemState::Pending {
                    item.rented_at.as_ref()
                } else {
                    item.returned_at.as_ref()
                };
                if let Some(since) = stuck_since(since) {
                    report.stuck.push(format!(
                        "member {}: book {} {} since {since} (the book service has not answered)",
                        card.member_id,
                        item.book_id,
                        state.as_str_name()
                    ));
                }
            }
            if matches!(
                state,
                ItemState::Pending | ItemState::Rented | ItemState::ReturnPending
            ) {
                holders
                    .entry(&item.book_id)
                    .or_default()
                    .push(&card.member_id);
            }
            if matches!(
                state,
                ItemState::Rented | ItemState::ReturnPending | ItemState::Returned
            ) {
                *confirmed.entry(&item.book_id).or_default() += 1;
            }
        }
    }
    for book in &books {
        let held_by = holders.get(book.book_id.as_str()).map_or(0, Vec::len);
        let unavailable = book.status() == BookStatus::Unavailable;
        if held_by > 1 {
            report.violations.push(format!(
                "book {} is held by {held_by} cards at once",
                book.book_id
            ));
        }
        if unavailable && held_by == 0 {
            report.violations.push(format!(
                "book {} is UNAVAILABLE but no card holds it",
                book.book_id
            ));
        }
        if !unavailable && held_by == 1 && report.settling == 0 {
            report
                .violations
                .push(format!("book {} is rented but AVAILABLE", book.book_id));
        }
    }
    let cards_by_member: HashMap<&str, &RentalCard> = cards
        .iter()
        .map(|card| (card.member_id.as_str(), card))
        .collect();
    for member in &members {
        let expected = cards_by_member
            .get(member.member_id.as_str())
            .map_or(0, |card| expected_points(card));
        if member.points != expected {
            report.violations.push(format!(
                "member {} has {} points, the events give {expected}",
                member.member_id, member.points
            ));
        }
    }
    if let Some(url) = &endpoints.bestbook {
        let mut bestbook =
            BestBookServiceClient::new(channel(&endpoints.identity, url, "bestbook").await?);
        let ranking = bestbook
            .get_best_books(GetBestBooksRequest { limit: 100 })
            .await?
            .into_inner()
            .books;
        let counted: HashMap<&str, i64> = ranking
            .iter()
            .map(|stats| (stats.book_id.as_str(), stats.rentals))
            .collect();
        // The ranking shows the top 100; compare the books it shows, and that no confirmed
        // book is missing while the ranking has room.
        for (book_id, rentals) in &confirmed {
            match counted.get(book_id) {
                Some(count) if count != rentals => report.violations.push(format!(
                    "best-seller count of book {book_id} is {count}, confirmed rentals {rentals}"
                )),
                None if ranking.len() < 100 => report.violations.push(format!(
                    "book {book_id} has {rentals} confirmed rentals but is not ranked"
                )),
                _ => {}
            }
        }
    }
    Ok(report)
}

/// Points a member should have from the events of their card.
pub fn expected_points(card: &RentalCard) -> i64 {
    let items = card
        .rented_items
        .iter()
        .chain(&card.returned_items)
        .chain(&card.canceled_items);
    let mut points = 0;
    let mut charged = 0;
    for item in items {
        match item.state() {
            ItemState::Canceled => {}
            ItemState::Returned => {
                points += POINTS_PER_RENTAL + POINTS_PER_RETURN;
                charged += item.late_fee;
            }
            _ => points += POINTS_PER_RENTAL,
        }
    }
    // Fees charged and no longer owed were paid with points.
    points - (charged - card.late_fee)
}

/// Polls [`check`] until the system is consistent or `deadline` passes; returns the last
/// report either way.
pub async fn check_until_consistent(
    endpoints: &Endpoints,
    deadline: std::time::Duration,
) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    loop {
        let report = check(endpoints).await?;
        if report.is_consistent() || started.elapsed() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use bookmesh::proto::rental::v1::{RentalCard, RentalItem};

    use super::*;

    fn item(state: ItemState, late_fee: i64) -> RentalItem {
        RentalItem {
            state: state.into(),
            late_fee,
            ..RentalItem::default()
        }
    }

    #[test]
    fn points_follow_the_events_of_the_card() {
        let card = RentalCard {
            late_fee: 10,
            rented_items: vec![item(ItemState::Rented, 0)],
            returned_items: vec![item(ItemState::Returned, 30), item(ItemState::Returned, 0)],
            canceled_items: vec![item(ItemState::Canceled, 0)],
            ..RentalCard::default()
        };
        // 3 rentals not canceled, 2 returns, 30 charged of which 10 still owed: 30 + 20 - 20.
        assert_eq!(expected_points(&card), 30);
    }
}
