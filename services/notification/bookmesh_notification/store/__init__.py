"""This service's own storage: one small interface (`NoticeStore`), on SQLite or Redis."""

from __future__ import annotations

from ..config import Config
from .base import AppliedEvent, DeadLetter, NoticeStore, Outcome, StoreError, StoreUnavailable

__all__ = [
    "AppliedEvent",
    "DeadLetter",
    "NoticeStore",
    "Outcome",
    "StoreError",
    "StoreUnavailable",
    "from_config",
]


def from_config(config: Config) -> NoticeStore:
    """The store `BOOKMESH_NOTIFICATION_STORE` names (not opened yet)."""
    if config.store == "redis":
        from .redis import RedisStore

        return RedisStore(config.redis_url, config.redis_prefix, max_notices_per_member=config.max_notices_per_member)
    from .sqlite import SqliteStore

    return SqliteStore(config.sqlite_path, max_notices_per_member=config.max_notices_per_member)
