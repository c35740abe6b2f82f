"""The store on SQLite (`<data dir>/notification.db`), for `make run` and one replica: the
standard library's sqlite3 on one connection, in one worker thread, so the event loop never
blocks on disk and transactions never interleave. WAL journal, like the Rust services' files.

Errors: a file that cannot be opened, locked too long, a full disk or a folder that cannot be
made are StoreUnavailable (they may pass; readiness follows); a damaged file is StoreError.
Anything else (a binding this code got wrong) stays what it is: a bug, not the store's state.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from ..notices import DueItem, Notice, NoticeKind
from .base import (
    MAX_DEAD_LETTERS,
    MAX_NOTICES_PER_MEMBER,
    AppliedEvent,
    DeadLetter,
    NoticeStore,
    Outcome,
    StoreError,
    StoreUnavailable,
)

#: Schema versions, applied in order, each once (`schema_migrations`).
MIGRATIONS = (
    """
    CREATE TABLE notices (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        notice_id TEXT NOT NULL UNIQUE,
        member_id TEXT NOT NULL,
        kind INTEGER NOT NULL,
        text TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        book_id TEXT NOT NULL DEFAULT '',
        title TEXT NOT NULL DEFAULT '',
        due_at_ms INTEGER,
        reason TEXT NOT NULL DEFAULT '',
        points INTEGER NOT NULL DEFAULT 0,
        event_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX notices_by_member ON notices (member_id, position);
    CREATE TABLE inbox_events (
        event_id TEXT PRIMARY KEY,
        subscription TEXT NOT NULL,
        event_type TEXT NOT NULL,
        processed_at_ms INTEGER NOT NULL
    );
    CREATE INDEX inbox_events_by_age ON inbox_events (processed_at_ms);
    CREATE TABLE consumer_cursors (
        subscription TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    );
    CREATE TABLE due_items (
        item_id TEXT PRIMARY KEY,
        member_id TEXT NOT NULL,
        book_id TEXT NOT NULL,
        title TEXT NOT NULL,
        due_at_ms INTEGER NOT NULL,
        reminded INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX due_items_open ON due_items (reminded, due_at_ms);
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        subscription TEXT NOT NULL,
        event_id TEXT NOT NULL,
        envelope BLOB NOT NULL,
        error TEXT NOT NULL,
        failed_at_ms INTEGER NOT NULL
    );
    """,
    # 2: notices found by age, for their retention (prune_notices).
    """
    CREATE INDEX notices_by_age ON notices (created_at_ms);
    """,
)
#: Rows deleted per statement when pruning, so a large backlog never holds the write lock long.
_PRUNE_BATCH = 1000

_NOTICE_COLUMNS = (
    "position, notice_id, member_id, kind, text, created_at_ms, book_id, title, due_at_ms, reason, points, event_id"
)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _notice(row: tuple) -> Notice:
    position, notice_id, member_id, kind, text, created, book_id, title, due, reason, points, event_id = row
    return Notice(
        notice_id=notice_id,
        member_id=member_id,
        kind=NoticeKind(kind),
        text=text,
        created_at=_moment(created),
        book_id=book_id,
        title=title,
        due_at=_moment(due),
        reason=reason,
        points=points,
        event_id=event_id,
        position=position,
    )


class SqliteStore(NoticeStore):
    """Notices in one SQLite file."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_notices_per_member: int = MAX_NOTICES_PER_MEMBER,
        max_dead_letters: int = MAX_DEAD_LETTERS,
    ) -> None:
        self._path = str(path)
        self._max_notices = max_notices_per_member
        self._max_dead_letters = max_dead_letters
        self._connection: sqlite3.Connection | None = None
        # One thread: the connection is used by it alone, transactions never interleave.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    async def _run(self, work, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, work, *args)
        except (sqlite3.OperationalError, OSError) as error:
            # Locked, disk full or failing, the file or its folder not there or not ours.
            raise StoreUnavailable(f"sqlite: {error}") from error
        except sqlite3.DatabaseError as error:
            if type(error) in (sqlite3.DatabaseError, sqlite3.InternalError):
                # "file is not a database", "database disk image is malformed".
                raise StoreError(f"sqlite: {error}") from error
            raise

    # === lifecycle ===

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        if self._connection is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA busy_timeout = 5000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            self._connection = connection
        db = self._connection
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER)")
        for version, script in enumerate(MIGRATIONS, start=1):
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                    db.execute("COMMIT")
                    continue
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, ?)",
                    (version, _ms(datetime.now(timezone.utc))),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._connection is None:
            return

        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await self._run(close)

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreUnavailable("the store is not open")
        return self._connection

    async def ping(self) -> None:
        await self._run(lambda: self._db().execute("SELECT 1 FROM consumer_cursors LIMIT 1").fetchall())

    # === writes ===

    async def apply_event(self, event: AppliedEvent, now: datetime) -> Outcome:
        return await self._run(self._apply, event, _ms(now))

    def _apply(self, event: AppliedEvent, now_ms: int) -> Outcome:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            seen = db.execute("SELECT 1 FROM inbox_events WHERE event_id = ?", (event.event_id,)).fetchone()
            written: list[Notice] = []
            dropped = 0
            if not seen:
                written = [n for n in (self._insert_notice(db, n) for n in event.notices) if n]
                for member_id in {n.member_id for n in written}:
                    self._trim(db, member_id)
                for item in event.remember:
                    db.execute(
                        "INSERT INTO due_items (item_id, member_id, book_id, title, due_at_ms) VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT (item_id) DO NOTHING",
                        (item.item_id, item.member_id, item.book_id, item.title, _ms(item.due_at)),
                    )
                for item_id in event.forget:
                    db.execute("DELETE FROM due_items WHERE item_id = ?", (item_id,))
                if event.dead_letter is not None:
                    db.execute(
                        "INSERT INTO dead_letters (subscription, event_id, envelope, error, failed_at_ms)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (
                            event.subscription,
                            event.event_id,
                            event.dead_letter.envelope,
                            event.dead_letter.error,
                            now_ms,
                        ),
                    )
                    dropped = db.execute(
                        "DELETE FROM dead_letters WHERE id <= "
                        "(SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET ?)",
                        (self._max_dead_letters,),
                    ).rowcount
                db.execute(
                    "INSERT INTO inbox_events (event_id, subscription, event_type, processed_at_ms) VALUES (?, ?, ?, ?)",
                    (event.event_id, event.subscription, event.event_type, now_ms),
                )
            # The cursor only moves forward, duplicate or not.
            db.execute(
                "INSERT INTO consumer_cursors (subscription, position) VALUES (?, ?)"
                " ON CONFLICT (subscription) DO UPDATE SET position = excluded.position"
                " WHERE excluded.position > consumer_cursors.position",
                (event.subscription, event.sequence),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Outcome(duplicate=bool(seen), written=tuple(written), dropped_dead_letters=dropped)

    @staticmethod
    def _insert_notice(db: sqlite3.Connection, notice: Notice) -> Notice | None:
        cursor = db.execute(
            "INSERT INTO notices (notice_id, member_id, kind, text, created_at_ms, book_id, title, due_at_ms,"
            " reason, points, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (notice_id) DO NOTHING",
            (
                notice.notice_id,
                notice.member_id,
                int(notice.kind),
                notice.text,
                _ms(notice.created_at),
                notice.book_id,
                notice.title,
                None if notice.due_at is None else _ms(notice.due_at),
                notice.reason,
                notice.points,
                notice.event_id,
            ),
        )
        if cursor.rowcount != 1:
            return None
        return replace(notice, position=cursor.lastrowid)

    def _trim(self, db: sqlite3.Connection, member_id: str) -> None:
        """Keeps the member's newest `max_notices_per_member` notices (in the writing
        transaction: no member is ever over the bound)."""
        db.execute(
            "DELETE FROM notices WHERE member_id = ? AND position <= "
            "(SELECT position FROM notices WHERE member_id = ? ORDER BY position DESC LIMIT 1 OFFSET ?)",
            (member_id, member_id, self._max_notices),
        )

    async def remind(self, item_id: str, notice: Notice | None) -> Notice | None:
        return await self._run(self._remind, item_id, notice)

    def _remind(self, item_id: str, notice: Notice | None) -> Notice | None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            closed = db.execute("UPDATE due_items SET reminded = 1 WHERE item_id = ? AND reminded = 0", (item_id,))
            written = None
            if closed.rowcount == 1 and notice is not None:
                written = self._insert_notice(db, notice)
                if written is not None:
                    self._trim(db, written.member_id)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return written

    async def prune_inbox(self, older_than: datetime) -> int:
        return await self._run(self._prune, "inbox_events", "processed_at_ms", _ms(older_than))

    async def prune_notices(self, older_than: datetime) -> int:
        return await self._run(self._prune, "notices", "created_at_ms", _ms(older_than))

    def _prune(self, table: str, column: str, before_ms: int) -> int:
        """Deletes `table`'s rows whose `column` is before `before_ms`, in batches."""
        deleted = 0
        while True:
            cursor = self._db().execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)",
                (before_ms, _PRUNE_BATCH),
            )
            deleted += cursor.rowcount
            if cursor.rowcount < _PRUNE_BATCH:
                return deleted

    # === reads ===

    async def cursor(self, subscription: str) -> int:
        def read() -> int:
            row = (
                self._db()
                .execute("SELECT position FROM consumer_cursors WHERE subscription = ?", (subscription,))
                .fetchone()
            )
            return row[0] if row else 0

        return await self._run(read)

    async def list_notices(self, member_id: str, limit: int, before: int | None = None) -> list[Notice]:
        def read() -> list[Notice]:
            rows = (
                self._db()
                .execute(
                    f"SELECT {_NOTICE_COLUMNS} FROM notices WHERE member_id = ? AND position < ?"
                    " ORDER BY position DESC LIMIT ?",
                    (member_id, before if before is not None else 2**63 - 1, limit),
                )
                .fetchall()
            )
            return [_notice(row) for row in rows]

        return await self._run(read)

    async def notices_after(self, member_id: str, after: int, limit: int) -> list[Notice]:
        def read() -> list[Notice]:
            rows = (
                self._db()
                .execute(
                    f"SELECT {_NOTICE_COLUMNS} FROM notices WHERE member_id = ? AND position > ?"
                    " ORDER BY position LIMIT ?",
                    (member_id, after, limit),
                )
                .fetchall()
            )
            return [_notice(row) for row in rows]

        return await self._run(read)

    async def last_position(self, member_id: str) -> int:
        def read() -> int:
            row = self._db().execute("SELECT MAX(position) FROM notices WHERE member_id = ?", (member_id,)).fetchone()
            return row[0] or 0

        return await self._run(read)

    async def due_before(self, deadline: datetime, limit: int) -> list[DueItem]:
        def read() -> list[DueItem]:
            rows = (
                self._db()
                .execute(
                    "SELECT item_id, member_id, book_id, title, due_at_ms FROM due_items"
                    " WHERE reminded = 0 AND due_at_ms <= ? ORDER BY due_at_ms LIMIT ?",
                    (_ms(deadline), limit),
                )
                .fetchall()
            )
            return [DueItem(item, member, book, title, _moment(due)) for item, member, book, title, due in rows]

        return await self._run(read)

    async def dead_letters(self) -> list[tuple[str, DeadLetter]]:
        def read() -> list[tuple[str, DeadLetter]]:
            rows = self._db().execute("SELECT event_id, envelope, error FROM dead_letters ORDER BY id").fetchall()
            return [(event_id, DeadLetter(bytes(envelope), error)) for event_id, envelope, error in rows]

        return await self._run(read)
