//! Persistence of rental cards: the only module that sees sea-orm.
//!
//! Every change is read-modify-write in one local transaction, guarded by the card's version
//! (optimistic concurrency): two requests racing on one card cannot both pass a rule such as
//! "at most five books" — the loser retries on fresh data. The events a change publishes
//! (`events::published`) go to the outbox in the same transaction, and the relay is woken once
//! it committed.

pub mod entity;
pub mod migration;

use std::collections::HashSet;

use bookmesh::db::Writer;
use bookmesh::events::outbox::{self, Relay};
use bookmesh::paging::PageRequest;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, TransactionTrait,
};
use uuid::Uuid;

use crate::domain::{CardStatus, Change, ItemState, RentalCard, RentalItem, RuleViolation};
use crate::error::RentalError;
use crate::history::{History, Received, Step};
use entity::{card, item};

/// Card changes announced to history watchers and not read yet, at most; a watcher further
/// behind looks at its member's history anyway.
const CHANGE_NOTICES: usize = 256;

/// Attempts of a read-modify-write before giving up with ABORTED.
const MAX_ATTEMPTS: usize = 8;

#[derive(Clone)]
pub struct RentalStore {
    db: DatabaseConnection,
    /// Woken after a commit that appended events, so they do not wait for its next poll.
    relay: Relay,
    /// Announces the member of each card change this process commits, so that only that
    /// member's history watchers look at once (the others wait for their poll).
    changes: tokio::sync::broadcast::Sender<Uuid>,
}

/// A card with one page of its history.
pub struct CardPage {
    pub card: RentalCard,
    /// Finished items (RETURNED, CANCELED), newest first.
    pub history: Vec<RentalItem>,
    /// Where the next (older) page starts; empty after the oldest.
    pub next_page_token: String,
}

/// A card as read, with what the save needs to know about the stored rows.
struct LoadedCard {
    card: RentalCard,
    /// `None` for a card that is not stored yet.
    version: Option<i64>,
    /// Items already stored, by id: saved with UPDATE, the others with INSERT.
    stored_items: HashSet<Uuid>,
}

impl RentalStore {
    pub fn new(db: DatabaseConnection, relay: Relay) -> Self {
        Self {
            db,
            relay,
            changes: tokio::sync::broadcast::channel(CHANGE_NOTICES).0,
        }
    }

    /// The members whose cards this process changes, as it commits them ([`Self::update`]:
    /// the API's writes). Changes made by the event consumers or by other replicas do not
    /// show here: a watcher also polls [`Self::history_fingerprint`]. A receiver that lags
    /// behind has missed some: it looks, as for its own member.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.changes.subscribe()
    }

    /// A value that changes whenever the member's history does: the card's version (every
    /// saved change bumps it, and events are appended with a change) and the newest saga
    /// step's id (a late answer may add a step to a finished item without changing the card).
    /// `None` if the member never rented. Two indexed lookups, cheap enough to poll.
    pub async fn history_fingerprint(
        &self,
        member_id: Uuid,
    ) -> Result<Option<(i64, i64)>, RentalError> {
        let key = member_id.to_string();
        let Some(card) = card::Entity::find_by_id(key.clone()).one(&self.db).await? else {
            return Ok(None);
        };
        let newest_step = entity::saga_step::Entity::find()
            .filter(entity::saga_step::Column::MemberId.eq(key))
            .order_by_desc(entity::saga_step::Column::Id)
            .one(&self.db)
            .await?
            .map_or(0, |step| step.id);
        Ok(Some((card.version, newest_step)))
    }

    /// A read-only transaction whose reads all see one moment (REPEATABLE READ; a SQLite
    /// transaction always does), so a card and its history never mix two states of an item
    /// a saga step changed in between.
    async fn snapshot(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        if self.db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            self.db.begin().await
        } else {
            self.db
                .begin_with_config(
                    Some(sea_orm::IsolationLevel::RepeatableRead),
                    Some(sea_orm::AccessMode::ReadOnly),
                )
                .await
        }
    }

    /// The member's card with the books held, if they ever rented.
    pub async fn card(&self, member_id: Uuid) -> Result<Option<RentalCard>, RentalError> {
        Ok(load(&self.db, member_id, None)
            .await?
            .map(|loaded| loaded.card))
    }

    /// The member's card, if they ever rented, with one page of its history (finished items,
    /// newest first).
    pub async fn card_page(
        &self,
        member_id: Uuid,
        page: &PageRequest,
    ) -> Result<Option<CardPage>, RentalError> {
        let snapshot = self.snapshot().await?;
        let Some(loaded) = load(&snapshot, member_id, None).await? else {
            return Ok(None);
        };
        let (history, next_page_token) = finished_items(&snapshot, member_id, page).await?;
        snapshot.commit().await?;
        Ok(Some(CardPage {
            card: loaded.card,
            history,
            next_page_token,
        }))
    }

    /// Applies `rule` to the member's card and saves the result atomically, together with the
    /// event of the change it made (transactional outbox). With `create_if_missing`, a member
    /// without a card starts with an empty one. A rule violation saves nothing. The rule may
    /// run more than once: a lost race is retried on fresh data.
    pub async fn update<C>(
        &self,
        member_id: Uuid,
        create_if_missing: bool,
        rule: impl Fn(&mut RentalCard) -> Result<C, RuleViolation>,
    ) -> Result<(RentalCard, C), RentalError>
    where
        C: Clone + Into<Option<Change>>,
    {
        for attempt in 1..=MAX_ATTEMPTS {
            // On SQLite, this process's writers take turns (see begin_write), and that one
            // writer is what limits the rent path (docs/performance.md): every statement run
            // while it holds the turn is a round trip to the connection's thread. So the first
            // attempt reads the card before taking the turn and holds it only to write. The
            // card's version makes that safe: a card changed between the read and the write
            // fails the versioned update (or, new, the insert) as a conflict, and the retry
            // reads under the turn, where on SQLite no writer of this process can get in
            // between: a busy card costs one retry, not a livelock.
            let mut writing = if attempt == 1 {
                None
            } else {
                Some(bookmesh::db::begin_write(&self.db, Writer::Call).await?)
            };
            let loaded = match &writing {
                Some((txn, _turn)) => load(txn, member_id, None).await?,
                None => load(&self.db, member_id, None).await?,
            };
            let loaded = match loaded {
                Some(loaded) => loaded,
                None if create_if_missing => LoadedCard {
                    card: RentalCard::new(member_id),
                    version: None,
                    stored_items: HashSet::new(),
                },
                None => return Err(RentalError::CardNotFound(member_id)),
            };
            let mut card = loaded.card.clone();
            let outcome = rule(&mut card)?;
            let events: Vec<_> = outcome
                .clone()
                .into()
                .and_then(|change| crate::events::published(member_id, &change))
                .into_iter()
                .collect();
            let publishes = !events.is_empty();
            let (txn, turn) = match writing.take() {
                Some(writing) => writing,
                None => bookmesh::db::begin_write(&self.db, Writer::Call).await?,
            };
            let saved = match save(&txn, &loaded, &card).await {
                Ok(()) => outbox::append(&txn, events).await.map_err(SaveError::from),
                Err(error) => Err(error),
            };
            match saved {
                Ok(()) => {}
                Err(SaveError::Conflict) => {
                    tracing::debug!(%member_id, attempt, "card changed concurrently; retrying");
                    // Roll back and let the next writer go before pausing.
                    drop(txn);
                    drop(turn);
                    // The first attempt read before its turn: the retry reads under it, and
                    // needs no pause to stop colliding.
                    if attempt > 1 {
                        contention_backoff(attempt).await;
                    }
                    continue;
                }
                Err(SaveError::Database(error)) => return Err(error.into()),
            }
            let committed = txn.commit().await;
            drop(turn);
            match committed {
                Ok(()) => {
                    // Committed with its outbox row, not yet published: after a crash here
                    // the relay of the next process publishes it (docs/faults.md).
                    bookmesh::faults::crash_point(bookmesh::faults::crash_points::AFTER_COMMIT);
                    if publishes {
                        self.relay.wake();
                    }
                    // No receiver (no watcher) is not an error.
                    let _ = self.changes.send(member_id);
                    return Ok((card, outcome));
                }
                Err(error) if is_contention(&error) => {
                    contention_backoff(attempt).await;
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(RentalError::Contended)
    }
}

/// A short random pause before retrying a lost race, so the racers do not collide again.
async fn contention_backoff(attempt: usize) {
    let bound_ms = 1u64 << attempt.min(6);
    tokio::time::sleep(std::time::Duration::from_micros(fastrand::u64(
        ..bound_ms * 1000,
    )))
    .await;
}

/// Applies `rule` to an existing card inside the caller's transaction (an event consumer's),
/// with the event of the change it made. A concurrent change makes it fail; the consumer
/// retries the whole event (and wakes the relay once it committed).
///
/// The card holds the books held and `item_id` (the item the saga step is about, even when
/// it is finished already: a late answer to a rental that timed out).
pub async fn update_in<C>(
    txn: &impl ConnectionTrait,
    member_id: Uuid,
    item_id: Option<Uuid>,
    rule: impl FnOnce(&mut RentalCard) -> Result<C, RuleViolation>,
) -> Result<(RentalCard, C), RentalError>
where
    C: Clone + Into<Option<Change>>,
{
    let loaded = load(txn, member_id, item_id)
        .await?
        .ok_or(RentalError::CardNotFound(member_id))?;
    let mut card = loaded.card.clone();
    let outcome = rule(&mut card)?;
    if card == loaded.card {
        // A repeat that changes nothing (a retried ReturnBook) writes nothing either.
        return Ok((card, outcome));
    }
    match save(txn, &loaded, &card).await {
        Ok(()) => {}
        Err(SaveError::Conflict) => return Err(RentalError::Contended),
        Err(SaveError::Database(error)) => return Err(error.into()),
    }
    let events = outcome
        .clone()
        .into()
        .and_then(|change| crate::events::published(member_id, &change));
    outbox::append(txn, events.into_iter().collect()).await?;
    Ok((card, outcome))
}

/// Saga steps older than `retention` go: a saga's timeline (GetRentalHistory) covers that
/// long, and the table stops growing with every rental ever made.
pub fn saga_steps_retention(
    retention: std::time::Duration,
) -> bookmesh::events::retention::RetentionTarget {
    bookmesh::events::retention::RetentionTarget::by_age::<entity::saga_step::Entity>(
        "saga_steps",
        retention,
        entity::saga_step::Column::At,
    )
}

/// Records an event the rental service received for one of its sagas, in the consumer's
/// transaction.
pub async fn record_step(
    txn: &impl ConnectionTrait,
    member_id: Uuid,
    item_id: Uuid,
    event: &bookmesh::events::Event,
    detail: &str,
) -> Result<(), DbErr> {
    entity::saga_step::Entity::insert(entity::saga_step::ActiveModel {
        member_id: Set(member_id.to_string()),
        item_id: Set(item_id.to_string()),
        event_type: Set(event.event_type.clone()),
        event_id: Set(event.event_id.clone()),
        producer: Set(event.producer.clone()),
        at: Set(bookmesh::db::now()),
        detail: Set(detail.chars().take(300).collect()),
        ..Default::default()
    })
    .exec(txn)
    .await?;
    Ok(())
}

impl RentalStore {
    /// What GetRentalHistory is built from: the card, the events the rental service published
    /// about the member (its outbox) and those it received (saga steps).
    ///
    /// It covers the books held and the newest page of finished items, so it stays bounded
    /// however long the member's history.
    pub async fn history(&self, member_id: Uuid) -> Result<Option<History>, RentalError> {
        let snapshot = self.snapshot().await?;
        let Some(mut loaded) = load(&snapshot, member_id, None).await? else {
            return Ok(None);
        };
        let (mut finished, _) =
            finished_items(&snapshot, member_id, &PageRequest::first_page()).await?;
        finished.reverse();
        loaded.card.items.extend(finished);
        loaded.card.items.sort_by_key(|item| item.item_id);
        let item_ids: Vec<String> = loaded
            .card
            .items
            .iter()
            .map(|item| item.item_id.to_string())
            .collect();
        let key = member_id.to_string();
        let published = outbox::events_about(&snapshot, "rental", &key).await?;
        let received = entity::saga_step::Entity::find()
            .filter(entity::saga_step::Column::MemberId.eq(key))
            .filter(entity::saga_step::Column::ItemId.is_in(item_ids))
            .order_by_asc(entity::saga_step::Column::Id)
            .all(&snapshot)
            .await?
            .into_iter()
            .map(|row| Received {
                item_id: row.item_id,
                step: Step {
                    event_type: row.event_type,
                    event_id: row.event_id,
                    producer: row.producer,
                    at: row.at,
                    detail: row.detail,
                },
            })
            .collect();
        snapshot.commit().await?;
        Ok(Some(History {
            card: loaded.card,
            published,
            received,
        }))
    }
}

/// Saga steps waiting for another service's answer since before a cutoff.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StuckSteps {
    /// Rentals PENDING: the book service has not reserved or refused the copy.
    pub rents: u64,
    /// Returns RETURN_PENDING: the book service has not taken the copy back or refused.
    pub returns: u64,
    /// Late-fee payments the member service has not confirmed or refused.
    pub payments: u64,
    /// The oldest stuck rentals, (member, item), at most the limit asked for.
    pub oldest_rents: Vec<(Uuid, Uuid)>,
}

impl RentalStore {
    /// Counts the saga steps waiting since before `cutoff`, and lists up to `limit` of the
    /// oldest stuck rentals (each sweep handles a bounded batch).
    pub async fn stuck_steps(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: u64,
    ) -> Result<StuckSteps, RentalError> {
        use sea_orm::PaginatorTrait;
        let pending = || {
            item::Entity::find()
                .filter(item::Column::State.eq("PENDING"))
                .filter(item::Column::RentedAt.lt(cutoff))
        };
        let rents = pending().count(&self.db).await?;
        let returns = item::Entity::find()
            .filter(item::Column::State.eq("RETURN_PENDING"))
            .filter(item::Column::ReturnedAt.lt(cutoff))
            .count(&self.db)
            .await?;
        let payments = card::Entity::find()
            .filter(card::Column::LateFeeInPaymentSince.lt(cutoff))
            .count(&self.db)
            .await?;
        let oldest_rents = pending()
            .order_by_asc(item::Column::RentedAt)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                let parse = |field: &str, value: &str| {
                    Uuid::parse_str(value).map_err(|_| corrupt(&row.item_id, field, value))
                };
                Ok((
                    parse("member_id", &row.member_id)?,
                    parse("item_id", &row.item_id)?,
                ))
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        Ok(StuckSteps {
            rents,
            returns,
            payments,
            oldest_rents,
        })
    }
}

enum SaveError {
    Conflict,
    Database(DbErr),
}

impl From<DbErr> for SaveError {
    fn from(error: DbErr) -> Self {
        if is_contention(&error) {
            Self::Conflict
        } else {
            Self::Database(error)
        }
    }
}

/// Errors that mean "another transaction got there first": retry on fresh data. Besides the
/// platform's contention (a held lock, a serialization failure), a unique violation here is a
/// racing request that inserted the same new card or item first.
fn is_contention(error: &DbErr) -> bool {
    bookmesh::db::is_contention(error)
        || matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Loads the card with the books held, and `also` (an item of the card in any state).
async fn load(
    db: &impl ConnectionTrait,
    member_id: Uuid,
    also: Option<Uuid>,
) -> Result<Option<LoadedCard>, RentalError> {
    let key = member_id.to_string();
    let Some(row) = card::Entity::find_by_id(key.clone()).one(db).await? else {
        return Ok(None);
    };
    let mut wanted = Condition::any().add(item::Column::State.is_in(HELD_STATES));
    if let Some(item_id) = also {
        wanted = wanted.add(item::Column::ItemId.eq(item_id.to_string()));
    }
    let rows = item::Entity::find()
        .filter(item::Column::MemberId.eq(key))
        .filter(wanted)
        .order_by_asc(item::Column::ItemId)
        .all(db)
        .await?;
    let items = rows
        .into_iter()
        .map(item_into_domain)
        .collect::<Result<Vec<_>, _>>()?;
    let stored_items = items.iter().map(|item| item.item_id).collect();
    let status = match row.status.as_str() {
        AVAILABLE => CardStatus::Available,
        UNAVAILABLE => CardStatus::Unavailable,
        other => return Err(corrupt(&row.member_id, "status", other).into()),
    };
    Ok(Some(LoadedCard {
        card: RentalCard {
            member_id,
            status,
            late_fee: row.late_fee,
            late_fee_in_payment: row.late_fee_in_payment,
            late_fee_in_payment_since: row.late_fee_in_payment_since,
            items,
        },
        version: Some(row.version),
        stored_items,
    }))
}

async fn save(
    db: &impl ConnectionTrait,
    loaded: &LoadedCard,
    card: &RentalCard,
) -> Result<(), SaveError> {
    let key = card.member_id.to_string();
    match loaded.version {
        None => {
            card::Entity::insert(card::ActiveModel {
                member_id: Set(key.clone()),
                status: Set(card_status_text(card.status).to_owned()),
                late_fee: Set(card.late_fee),
                late_fee_in_payment: Set(card.late_fee_in_payment),
                late_fee_in_payment_since: Set(card.late_fee_in_payment_since),
                version: Set(1),
            })
            .exec(db)
            .await?;
        }
        Some(version) => {
            let updated = card::Entity::update_many()
                .col_expr(
                    card::Column::Status,
                    Expr::value(card_status_text(card.status)),
                )
                .col_expr(card::Column::LateFee, Expr::value(card.late_fee))
                .col_expr(
                    card::Column::LateFeeInPayment,
                    Expr::value(card.late_fee_in_payment),
                )
                .col_expr(
                    card::Column::LateFeeInPaymentSince,
                    Expr::value(card.late_fee_in_payment_since),
                )
                .col_expr(card::Column::Version, Expr::value(version + 1))
                .filter(card::Column::MemberId.eq(key.clone()))
                .filter(card::Column::Version.eq(version))
                .exec(db)
                .await?;
            if updated.rows_affected == 0 {
                return Err(SaveError::Conflict);
            }
        }
    }
    let before: std::collections::HashMap<Uuid, &RentalItem> = loaded
        .card
        .items
        .iter()
        .map(|item| (item.item_id, item))
        .collect();
    for item in &card.items {
        let row = item_active_model(&key, item);
        if !loaded.stored_items.contains(&item.item_id) {
            item::Entity::insert(row).exec(db).await?;
        } else if before.get(&item.item_id) != Some(&item) {
            item::Entity::update(row).exec(db).await?;
        }
    }
    Ok(())
}

/// One page of the member's finished items, newest first (item ids are UUIDv7, so their
/// order is the order of renting), and the token of the next page.
async fn finished_items(
    db: &impl ConnectionTrait,
    member_id: Uuid,
    page: &PageRequest,
) -> Result<(Vec<RentalItem>, String), RentalError> {
    let mut query = item::Entity::find()
        .filter(item::Column::MemberId.eq(member_id.to_string()))
        .filter(item::Column::State.is_in(FINISHED_STATES));
    if let Some(after) = &page.after {
        query = query.filter(item::Column::ItemId.lt(after.as_str()));
    }
    let mut rows = query
        .order_by_desc(item::Column::ItemId)
        .limit(page.fetch_limit())
        .all(db)
        .await?
        .into_iter()
        .map(|row| Ok((row.item_id.clone(), item_into_domain(row)?)))
        .collect::<Result<Vec<_>, DbErr>>()?;
    let next = page.finish(&mut rows, |(item_id, _)| item_id.as_str());
    Ok((rows.into_iter().map(|(_, item)| item).collect(), next))
}

const HELD_STATES: [&str; 3] = ["PENDING", "RENTED", "RETURN_PENDING"];
const FINISHED_STATES: [&str; 2] = ["RETURNED", "CANCELED"];

const AVAILABLE: &str = "AVAILABLE";
const UNAVAILABLE: &str = "UNAVAILABLE";

fn card_status_text(status: CardStatus) -> &'static str {
    match status {
        CardStatus::Available => AVAILABLE,
        CardStatus::Unavailable => UNAVAILABLE,
    }
}

fn state_text(state: ItemState) -> &'static str {
    match state {
        ItemState::Pending => "PENDING",
        ItemState::Rented => "RENTED",
        ItemState::ReturnPending => "RETURN_PENDING",
        ItemState::Returned => "RETURNED",
        ItemState::Canceled => "CANCELED",
    }
}

fn parse_state(text: &str) -> Option<ItemState> {
    Some(match text {
        "PENDING" => ItemState::Pending,
        "RENTED" => ItemState::Rented,
        "RETURN_PENDING" => ItemState::ReturnPending,
        "RETURNED" => ItemState::Returned,
        "CANCELED" => ItemState::Canceled,
        _ => return None,
    })
}

fn item_active_model(member_id: &str, item: &RentalItem) -> item::ActiveModel {
    item::ActiveModel {
        item_id: Set(item.item_id.to_string()),
        member_id: Set(member_id.to_owned()),
        book_id: Set(item.book_id.to_string()),
        title: Set(item.title.clone()),
        rented_at: Set(item.rented_at),
        due_at: Set(item.due_at),
        overdue: Set(item.overdue),
        state: Set(state_text(item.state).to_owned()),
        returned_at: Set(item.returned_at),
        late_fee: Set(item.late_fee),
        cancel_reason: Set(item.cancel_reason.clone()),
    }
}

fn corrupt(key: &str, field: &str, value: &str) -> DbErr {
    DbErr::Custom(format!(
        "rental row {key} has an invalid {field}: {value:?}"
    ))
}

fn item_into_domain(row: item::Model) -> Result<RentalItem, DbErr> {
    let uuid = |field: &str, value: &str| {
        Uuid::parse_str(value).map_err(|_| corrupt(&row.item_id, field, value))
    };
    Ok(RentalItem {
        item_id: uuid("item_id", &row.item_id)?,
        book_id: uuid("book_id", &row.book_id)?,
        state: parse_state(&row.state).ok_or_else(|| corrupt(&row.item_id, "state", &row.state))?,
        title: row.title,
        rented_at: row.rented_at,
        due_at: row.due_at,
        overdue: row.overdue,
        returned_at: row.returned_at,
        late_fee: row.late_fee,
        cancel_reason: row.cancel_reason,
    })
}
