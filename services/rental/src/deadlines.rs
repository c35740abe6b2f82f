//! Saga deadlines: a saga step that waits on another service longer than the step timeout
//! is reported, and a rental the book service never answered is given up.
//!
//! Every sweep publishes `bookmesh_saga_steps_stuck{service="rental",step}` for the three
//! steps the rental service waits on (`reserve_book`, `return_book`, `deduct_points`), and
//! cancels a batch of the rentals PENDING for longer than the timeout: the card frees the
//! slot, RentCanceled goes out, the member service takes its points back and the book
//! service frees the copy if it reserved it meanwhile (a late BookReserved then changes
//! nothing). Each is counted in `bookmesh_saga_timeouts_total`.
//!
//! Returns and payments are reported, not compensated: a returned book is on the shelf
//! whatever the book service says, and undoing a payment the member service may still apply
//! would charge twice. Their way out is the dead-letter redrive of whatever blocked them.

use std::time::Duration;

use crate::store::RentalStore;

/// Rentals a sweep cancels at most; the next sweep takes the rest.
const TIMEOUTS_PER_SWEEP: u64 = 100;

/// One sweep: report the stuck steps and cancel the oldest rentals past the timeout.
pub async fn sweep(store: &RentalStore, timeout: Duration) {
    let now = bookmesh::db::now();
    let Some(cutoff) = chrono::Duration::from_std(timeout)
        .ok()
        .and_then(|timeout| now.checked_sub_signed(timeout))
    else {
        return;
    };
    let stuck = match store.stuck_steps(cutoff, TIMEOUTS_PER_SWEEP).await {
        Ok(stuck) => stuck,
        Err(error) => {
            tracing::warn!(%error, "saga deadline sweep: reading stuck steps failed");
            return;
        }
    };
    bookmesh::metrics::set_saga_steps_stuck("rental", "reserve_book", stuck.rents);
    bookmesh::metrics::set_saga_steps_stuck("rental", "return_book", stuck.returns);
    bookmesh::metrics::set_saga_steps_stuck("rental", "deduct_points", stuck.payments);
    if stuck.returns > 0 || stuck.payments > 0 {
        tracing::warn!(
            returns = stuck.returns,
            payments = stuck.payments,
            "saga steps waiting longer than the step timeout (see the dead letters of book and member)"
        );
    }
    let reason = format!(
        "timed out: the book service did not answer within {}",
        humanize(timeout)
    );
    for (member_id, item_id) in stuck.oldest_rents {
        let outcome = store
            .update(member_id, false, |card| {
                Ok(card.time_out_rent(item_id, cutoff, &reason, bookmesh::db::now()))
            })
            .await;
        match outcome {
            Ok((_, Some(_))) => {
                bookmesh::metrics::count_saga_timeout("rental", "reserve_book");
                tracing::warn!(%member_id, %item_id, "rental timed out: canceled, RentCanceled published");
            }
            // Answered meanwhile, or another replica's sweep got there first.
            Ok((_, None)) => {}
            Err(error) => {
                tracing::warn!(%member_id, %item_id, %error, "rental timeout failed; next sweep retries");
            }
        }
    }
}

/// `90s` as "1m 30s", for a reason people read.
fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use bookmesh::events::outbox::Relay;
    use chrono::{DateTime, Utc};
    use sea_orm_migration::MigratorTrait;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{ItemState, RentalCard};

    /// The value of `bookmesh_saga_steps_stuck` for rental's `step`.
    fn stuck_gauge(step: &str) -> String {
        let series = format!(r#"bookmesh_saga_steps_stuck{{service="rental",step="{step}"}} "#);
        bookmesh::metrics::render()
            .lines()
            .find_map(|line| line.strip_prefix(&series).map(str::to_owned))
            .unwrap_or_default()
    }

    async fn apply<C: Clone + Into<Option<crate::domain::Change>>>(
        store: &RentalStore,
        member: Uuid,
        rule: impl Fn(&mut RentalCard) -> Result<C, crate::domain::RuleViolation>,
    ) -> RentalCard {
        store.update(member, true, rule).await.expect("rule").0
    }

    fn item_of(card: &RentalCard) -> Uuid {
        card.items.last().expect("an item").item_id
    }

    #[tokio::test]
    async fn each_stuck_step_is_counted_and_only_pending_rentals_are_given_up() {
        let database = bookmesh::testing::TestDatabase::fresh().await;
        let db = bookmesh::db::connect_lazy(&database.url).await.expect("db");
        crate::store::migration::Migrator::up(&db, None)
            .await
            .expect("migrate");
        let store = RentalStore::new(db.clone(), Relay::new("rental", db));
        let now = bookmesh::db::now();
        let long_ago: DateTime<Utc> = now - chrono::Duration::minutes(10);
        let book = Uuid::now_v7;

        // A rental, a return and a payment nobody answered for ten minutes; a fresh rental.
        let (renting, returning, paying, fresh) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let stuck_rent =
            item_of(&apply(&store, renting, |c| c.rent(book(), "A".into(), long_ago)).await);
        let returned_book = book();
        let item = item_of(
            &apply(&store, returning, |c| {
                c.rent(returned_book, "B".into(), long_ago)
            })
            .await,
        );
        apply(&store, returning, |c| c.confirm_rent(item, long_ago)).await;
        apply(&store, returning, |c| {
            c.return_book(returned_book, long_ago)
        })
        .await;
        let late_book = book();
        let item =
            item_of(&apply(&store, paying, |c| c.rent(late_book, "C".into(), long_ago)).await);
        apply(&store, paying, |c| c.confirm_rent(item, long_ago)).await;
        apply(&store, paying, |c| c.mark_overdue(late_book, long_ago)).await;
        apply(&store, paying, |c| c.return_book(late_book, long_ago)).await;
        apply(&store, paying, |c| c.confirm_return(item, long_ago)).await;
        let fee = store
            .card(paying)
            .await
            .expect("card")
            .expect("card")
            .late_fee;
        assert!(fee > 0, "the late return owes a fee");
        apply(&store, paying, |c| c.clear_overdue(fee, long_ago)).await;
        let fresh_rent = item_of(&apply(&store, fresh, |c| c.rent(book(), "D".into(), now)).await);

        sweep(&store, Duration::from_secs(300)).await;
        assert_eq!(
            (
                stuck_gauge("reserve_book"),
                stuck_gauge("return_book"),
                stuck_gauge("deduct_points")
            ),
            ("1".to_owned(), "1".to_owned(), "1".to_owned())
        );
        let state = |card: Option<RentalCard>, item: Uuid| {
            card.expect("card")
                .items
                .iter()
                .find(|i| i.item_id == item)
                .map(|i| i.state)
        };
        assert_eq!(
            state(store.card(renting).await.expect("card"), stuck_rent),
            None,
            "given up: no longer held"
        );
        let page = store
            .card_page(renting, &bookmesh::paging::PageRequest::first_page())
            .await
            .expect("page")
            .expect("card");
        assert_eq!(page.history[0].state, ItemState::Canceled);
        assert!(
            page.history[0]
                .cancel_reason
                .as_deref()
                .unwrap_or_default()
                .contains("within 5m")
        );
        assert_eq!(
            state(store.card(fresh).await.expect("card"), fresh_rent),
            Some(ItemState::Pending),
            "a rental within the timeout waits"
        );
        let returning_card = store.card(returning).await.expect("card").expect("card");
        assert_eq!(
            returning_card.items[0].state,
            ItemState::ReturnPending,
            "reported, not undone"
        );
        let paying_card = store.card(paying).await.expect("card").expect("card");
        assert_eq!(paying_card.late_fee_in_payment, fee, "reported, not undone");

        sweep(&store, Duration::from_secs(300)).await;
        assert_eq!(
            stuck_gauge("reserve_book"),
            "0",
            "the rental was compensated"
        );
        assert_eq!(stuck_gauge("return_book"), "1");
    }

    #[test]
    fn timeouts_read_as_people_write_them() {
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_secs(300)), "5m");
        assert_eq!(humanize(Duration::from_secs(90)), "1m 30s");
    }
}
