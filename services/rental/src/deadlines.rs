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
    use super::*;

    #[test]
    fn timeouts_read_as_people_write_them() {
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_secs(300)), "5m");
        assert_eq!(humanize(Duration::from_secs(90)), "1m 30s");
    }
}
