"""The periodic tasks: a DUE_SOON notice once per rented book due within two days, from the
due dates RentConfirmed taught the store (forgotten once the book is returned, its rental
canceled, or it is overdue); and the retention of the inbox and of notices.

Both loops outlive whatever goes wrong in one round (logged; the next round tries again): they
end only when the service stops.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from . import telemetry
from .notices import REMINDER_WINDOW_SECONDS, Notice, is_due_soon, reminder, utc_now
from .readiness import Readiness
from .store import NoticeStore, StoreError, StoreUnavailable
from .watch import NoticeHub

log = logging.getLogger("bookmesh_notification.reminders")

#: Items read per round trip.
BATCH = 100


async def remind_due(store: NoticeStore, hub: NoticeHub, now: datetime) -> list[Notice]:
    """Writes the DUE_SOON notices due at `now`; returns those written. Items already past due
    are closed without a notice (their member hears of the overdue instead)."""
    written: list[Notice] = []
    with telemetry.tracer().start_as_current_span("notification remind"):
        while True:
            items = await store.due_before(now + timedelta(seconds=REMINDER_WINDOW_SECONDS), BATCH)
            for item in items:
                notice = reminder(item, now) if is_due_soon(item, now) else None
                sent = await store.remind(item.item_id, notice)
                if sent is not None:
                    written.append(sent)
                    telemetry.REMINDERS.inc()
                    log.info(
                        "notice written",
                        extra={"notice_id": sent.notice_id, "member_id": sent.member_id, "kind": sent.kind.name},
                    )
            if len(items) < BATCH:
                break
    if written:
        hub.notify(notice.member_id for notice in written)
    return written


async def run_reminders(
    store: NoticeStore,
    hub: NoticeHub,
    readiness: Readiness,
    interval: float,
    clock: Callable[[], datetime] = utc_now,
) -> None:
    """Reminds every `interval` seconds until the service stops."""
    await readiness.wait_started()
    while not readiness.stopping.is_set():
        try:
            await remind_due(store, hub, clock())
        except StoreUnavailable as error:
            log.warning("reminders postponed: the store is unavailable", extra={"error": str(error)})
        except StoreError as error:
            log.error("reminders postponed: the store answers with an error", extra={"error": str(error)})
        except Exception:  # noqa: BLE001 - the next round tries again
            log.exception("reminder round failed")
        if await readiness.sleep(interval):
            return


async def run_pruning(
    store: NoticeStore,
    readiness: Readiness,
    interval: float,
    inbox_retention: float,
    notice_retention: float,
    clock: Callable[[], datetime] = utc_now,
) -> None:
    """Every `interval` (> 0) until the service stops: forgets inbox entries older than
    `inbox_retention` seconds (the producer keeps its events as long, so an id older than that
    cannot be delivered again), and deletes notices older than `notice_retention`."""
    await readiness.wait_started()
    while not await readiness.sleep(interval):
        await prune(store, inbox_retention, notice_retention, clock())


async def prune(store: NoticeStore, inbox_retention: float, notice_retention: float, now: datetime) -> None:
    """One round of retention; what fails is logged, and the next round tries again."""
    for table, work in (
        ("inbox_events", lambda: store.prune_inbox(now - timedelta(seconds=inbox_retention))),
        ("notices", lambda: store.prune_notices(now - timedelta(seconds=notice_retention))),
    ):
        try:
            pruned = await work()
        except StoreUnavailable as error:
            log.warning("pruning postponed: the store is unavailable", extra={"table": table, "error": str(error)})
            continue
        except StoreError as error:
            log.error("pruning postponed: the store answers with an error", extra={"table": table, "error": str(error)})
            continue
        except Exception:  # noqa: BLE001 - the next round tries again
            log.exception("pruning failed", extra={"table": table})
            continue
        if pruned:
            telemetry.ROWS_PRUNED.labels(table).inc(pruned)
            log.info("rows pruned", extra={"table": table, "rows": pruned})
