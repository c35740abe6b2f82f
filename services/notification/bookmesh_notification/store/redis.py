"""The store on Redis, for Kubernetes: a key-value store this service alone owns (its own
Deployment and NetworkPolicy), shared by its replicas. Every write that must be atomic is one
Lua script (Redis runs a script alone, all of it or, on a failed command, what ran before it:
the scripts check first and write after, so a failure leaves nothing half done).

Bounded, because the cluster's Redis runs with `maxmemory` and `noeviction` (a full Redis
refuses every write, OOM): a member's notices are trimmed to the newest
`max_notices_per_member` in the script that writes one, notices older than the retention go in
`prune_notices` (by `notice_ages`), dead letters are trimmed to `max_dead_letters`.

Errors: a Redis that cannot be reached is StoreUnavailable; one that answers with an error
(OOM, READONLY after a failover, NOPERM, BUSY) is StoreError. Both are retryable.

Keys, all under the prefix (`bookmesh:notification:` by default; tests use their own):

| key | type | what |
|---|---|---|
| `position` | counter | the last notice position given |
| `notice:<notice id>` | string | a notice (JSON), never changed once written (deleted by retention) |
| `member:<member id>` | sorted set | the member's notice ids, scored by position (the newest kept) |
| `notice_ages` | sorted set | every notice id, scored by when it was written (ms), for the retention |
| `inbox` | sorted set | applied event ids, scored by when (ms), pruned after the retention |
| `cursors` | hash | subscription → feed position of the last handled event |
| `due` | sorted set | watched rental items not reminded yet, scored by due time (ms) |
| `due:items` | hash | item id → the item (JSON) |
| `dead_letters` | list | events no retry can apply (JSON, the envelope in base64), the newest kept |
| `schema` | string | the key layout's version (2: `notice_ages`) |
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import datetime, timezone

import redis.asyncio as aioredis
import redis.exceptions

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

SCHEMA_VERSION = 2
#: Notices deleted per script run by `prune_notices` (a script blocks Redis while it runs).
_PRUNE_BATCH = 500

# Writes a notice unless its id exists: position, the member's set (trimmed to the newest
# `max_notices`) and the age index. Shared by the scripts that write notices.
_WRITE_NOTICE = """
local function write_notice(p, id, member, json, created_ms, max_notices)
  if redis.call('SETNX', p .. 'notice:' .. id, json) == 0 then
    return nil
  end
  local position = redis.call('INCR', p .. 'position')
  local key = p .. 'member:' .. member
  redis.call('ZADD', key, position, id)
  redis.call('ZADD', p .. 'notice_ages', created_ms, id)
  local excess = redis.call('ZCARD', key) - max_notices
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', key, 0, excess - 1)) do
      redis.call('DEL', p .. 'notice:' .. old)
      redis.call('ZREM', p .. 'notice_ages', old)
    end
    redis.call('ZREMRANGEBYRANK', key, 0, excess - 1)
  end
  return position
end
"""

_APPLY = _WRITE_NOTICE + """
local p = ARGV[1]
local e = cjson.decode(ARGV[2])
local max_notices, max_dead_letters = tonumber(ARGV[3]), tonumber(ARGV[4])
local function advance()
  local current = tonumber(redis.call('HGET', p .. 'cursors', e.subscription) or '0')
  if tonumber(e.sequence) > current then
    redis.call('HSET', p .. 'cursors', e.subscription, e.sequence)
  end
end
if redis.call('ZSCORE', p .. 'inbox', e.event_id) then
  advance()
  return {1, 0}
end
-- {duplicate, dead letters dropped, then (notice id, position) per notice written}
local result = {0, 0}
for _, n in ipairs(e.notices) do
  local position = write_notice(p, n.id, n.member, n.json, n.created_ms, max_notices)
  if position then
    table.insert(result, n.id)
    table.insert(result, position)
  end
end
for _, item in ipairs(e.remember) do
  if redis.call('HSETNX', p .. 'due:items', item.id, item.json) == 1 then
    redis.call('ZADD', p .. 'due', item.due_ms, item.id)
  end
end
for _, id in ipairs(e.forget) do
  redis.call('HDEL', p .. 'due:items', id)
  redis.call('ZREM', p .. 'due', id)
end
if e.dead_letter then
  local kept = redis.call('RPUSH', p .. 'dead_letters', e.dead_letter)
  if kept > max_dead_letters then
    redis.call('LTRIM', p .. 'dead_letters', kept - max_dead_letters, -1)
    result[2] = kept - max_dead_letters
  end
end
redis.call('ZADD', p .. 'inbox', e.now_ms, e.event_id)
advance()
return result
"""

_REMIND = _WRITE_NOTICE + """
local p, item, id, member, json = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local created_ms, max_notices = ARGV[6], tonumber(ARGV[7])
if redis.call('ZREM', p .. 'due', item) == 0 then
  return {}
end
redis.call('HDEL', p .. 'due:items', item)
if id == '' then
  return {}
end
local position = write_notice(p, id, member, json, created_ms, max_notices)
if not position then
  return {}
end
return {id, position}
"""

# Deletes up to ARGV[3] notices written before ARGV[2] (ms), with their place in their member's
# set: {ids looked at (fewer than the batch: done), notices deleted}.
_PRUNE_NOTICES = """
local p, before, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', p .. 'notice_ages', '-inf', '(' .. before, 'LIMIT', 0, limit)
local deleted = 0
for _, id in ipairs(ids) do
  local json = redis.call('GET', p .. 'notice:' .. id)
  if json then
    redis.call('ZREM', p .. 'member:' .. cjson.decode(json).member_id, id)
    redis.call('DEL', p .. 'notice:' .. id)
    deleted = deleted + 1
  end
  redis.call('ZREM', p .. 'notice_ages', id)
end
return {#ids, deleted}
"""


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _notice_json(notice: Notice) -> str:
    return json.dumps(
        {
            "notice_id": notice.notice_id,
            "member_id": notice.member_id,
            "kind": int(notice.kind),
            "text": notice.text,
            "created_at_ms": _ms(notice.created_at),
            "book_id": notice.book_id,
            "title": notice.title,
            "due_at_ms": None if notice.due_at is None else _ms(notice.due_at),
            "reason": notice.reason,
            "points": notice.points,
            "event_id": notice.event_id,
        },
        ensure_ascii=False,
    )


def _notice(text: str | bytes, position: float) -> Notice:
    data = json.loads(text)
    return Notice(
        notice_id=data["notice_id"],
        member_id=data["member_id"],
        kind=NoticeKind(data["kind"]),
        text=data["text"],
        created_at=_moment(data["created_at_ms"]),
        book_id=data["book_id"],
        title=data["title"],
        due_at=_moment(data["due_at_ms"]),
        reason=data["reason"],
        points=data["points"],
        event_id=data["event_id"],
        position=int(position),
    )


def _item_json(item: DueItem) -> str:
    return json.dumps(
        {
            "item_id": item.item_id,
            "member_id": item.member_id,
            "book_id": item.book_id,
            "title": item.title,
            "due_at_ms": _ms(item.due_at),
        },
        ensure_ascii=False,
    )


class RedisStore(NoticeStore):
    """Notices in Redis under `prefix`."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        max_notices_per_member: int = MAX_NOTICES_PER_MEMBER,
        max_dead_letters: int = MAX_DEAD_LETTERS,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._max_notices = max_notices_per_member
        self._max_dead_letters = max_dead_letters
        self._client: aioredis.Redis | None = None
        self._apply_script = None
        self._remind_script = None
        self._prune_script = None

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreUnavailable("the store is not open")
        return self._client

    async def _call(self, work):
        try:
            return await work
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise StoreUnavailable(f"redis: {error}") from error
        except redis.exceptions.RedisError as error:
            # It answered, with an error: OOM (full, `noeviction`), READONLY (a replica after a
            # failover), NOPERM (the ACL), BUSY (a script running). Retryable, not a bug here.
            raise StoreError(f"redis: {error}") from error

    # === lifecycle ===

    async def open(self) -> None:
        if self._client is None:
            self._client = aioredis.from_url(
                self._url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
            )
            self._apply_script = self._client.register_script(_APPLY)
            self._remind_script = self._client.register_script(_REMIND)
            self._prune_script = self._client.register_script(_PRUNE_NOTICES)
        await self._call(self._client.ping())
        await self._call(self._client.set(self._key("schema"), SCHEMA_VERSION, nx=True))
        version = int(await self._call(self._client.get(self._key("schema"))))
        if version < 2:
            await self._call(self._index_notice_ages())  # its SCAN's errors mapped too
            await self._call(self._client.set(self._key("schema"), SCHEMA_VERSION))

    async def _index_notice_ages(self) -> None:
        """Migration 2: the notices written before `notice_ages` existed, indexed by when they
        were written, so the retention sees them too (idempotent: replicas may race)."""
        client = self._redis()
        keys: list[bytes] = []

        async def index() -> None:
            texts = await self._call(client.mget(keys))
            ages = {}
            for key, text in zip(keys, texts, strict=True):
                if text is not None:
                    ages[key[len(self._key("notice:")) :].decode()] = json.loads(text)["created_at_ms"]
            if ages:
                await self._call(client.zadd(self._key("notice_ages"), ages))
            keys.clear()

        async for key in client.scan_iter(match=self._key("notice:*"), count=500):
            keys.append(key)
            if len(keys) >= 500:
                await index()
        if keys:
            await index()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> None:
        await self._call(self._redis().ping())

    async def drop_all(self) -> int:
        """Deletes every key under the prefix (tests clean up with it); returns how many."""
        client = self._redis()
        deleted = 0
        async for key in client.scan_iter(match=self._prefix + "*", count=500):
            deleted += await client.delete(key)
        return deleted

    # === writes ===

    async def apply_event(self, event: AppliedEvent, now: datetime) -> Outcome:
        self._redis()
        document = {
            "subscription": event.subscription,
            "event_id": event.event_id,
            "sequence": str(event.sequence),
            "now_ms": str(_ms(now)),
            "notices": [
                {
                    "id": n.notice_id,
                    "member": n.member_id,
                    "json": _notice_json(n),
                    "created_ms": str(_ms(n.created_at)),
                }
                for n in event.notices
            ],
            "remember": [
                {"id": i.item_id, "due_ms": str(_ms(i.due_at)), "json": _item_json(i)} for i in event.remember
            ],
            "forget": list(event.forget),
        }
        if event.dead_letter is not None:
            document["dead_letter"] = json.dumps(
                {
                    "subscription": event.subscription,
                    "event_id": event.event_id,
                    "envelope": base64.b64encode(event.dead_letter.envelope).decode(),
                    "error": event.dead_letter.error,
                    "failed_at_ms": _ms(now),
                }
            )
        # cjson turns an empty list into an empty table, which ipairs walks as empty: fine.
        arguments = [self._prefix, json.dumps(document, ensure_ascii=False), self._max_notices, self._max_dead_letters]
        result = await self._call(self._apply_script(args=arguments))
        positions = {}
        for index in range(2, len(result), 2):
            positions[result[index].decode()] = int(result[index + 1])
        written = tuple(replace(n, position=positions[n.notice_id]) for n in event.notices if n.notice_id in positions)
        return Outcome(duplicate=int(result[0]) == 1, written=written, dropped_dead_letters=int(result[1]))

    async def remind(self, item_id: str, notice: Notice | None) -> Notice | None:
        self._redis()
        args = [self._prefix, item_id, "", "", "", 0, self._max_notices]
        if notice is not None:
            args = [
                self._prefix,
                item_id,
                notice.notice_id,
                notice.member_id,
                _notice_json(notice),
                _ms(notice.created_at),
                self._max_notices,
            ]
        result = await self._call(self._remind_script(args=args))
        if not result or notice is None:
            return None
        return replace(notice, position=int(result[1]))

    async def prune_inbox(self, older_than: datetime) -> int:
        return await self._call(self._redis().zremrangebyscore(self._key("inbox"), "-inf", f"({_ms(older_than)}"))

    async def prune_notices(self, older_than: datetime) -> int:
        self._redis()
        deleted = 0
        while True:
            # In batches: a script holds Redis for as long as it runs.
            looked, removed = await self._call(self._prune_script(args=[self._prefix, _ms(older_than), _PRUNE_BATCH]))
            deleted += int(removed)
            if int(looked) < _PRUNE_BATCH:
                return deleted

    # === reads ===

    async def cursor(self, subscription: str) -> int:
        value = await self._call(self._redis().hget(self._key("cursors"), subscription))
        return int(value) if value is not None else 0

    async def _notices(self, pairs: list[tuple[bytes, float]]) -> list[Notice]:
        if not pairs:
            return []
        keys = [self._key("notice:" + notice_id.decode()) for notice_id, _ in pairs]
        texts = await self._call(self._redis().mget(keys))
        return [_notice(text, position) for text, (_, position) in zip(texts, pairs, strict=True) if text is not None]

    async def list_notices(self, member_id: str, limit: int, before: int | None = None) -> list[Notice]:
        pairs = await self._call(
            self._redis().zrevrangebyscore(
                self._key("member:" + member_id),
                "+inf" if before is None else f"({before}",
                "-inf",
                start=0,
                num=limit,
                withscores=True,
            )
        )
        return await self._notices(pairs)

    async def notices_after(self, member_id: str, after: int, limit: int) -> list[Notice]:
        pairs = await self._call(
            self._redis().zrangebyscore(
                self._key("member:" + member_id), f"({after}", "+inf", start=0, num=limit, withscores=True
            )
        )
        return await self._notices(pairs)

    async def last_position(self, member_id: str) -> int:
        newest = await self._call(self._redis().zrevrange(self._key("member:" + member_id), 0, 0, withscores=True))
        return int(newest[0][1]) if newest else 0

    async def due_before(self, deadline: datetime, limit: int) -> list[DueItem]:
        ids = await self._call(self._redis().zrangebyscore(self._key("due"), "-inf", _ms(deadline), start=0, num=limit))
        if not ids:
            return []
        texts = await self._call(self._redis().hmget(self._key("due:items"), ids))
        items = []
        for text in texts:
            if text is None:
                continue
            data = json.loads(text)
            items.append(
                DueItem(data["item_id"], data["member_id"], data["book_id"], data["title"], _moment(data["due_at_ms"]))
            )
        return items

    async def dead_letters(self) -> list[tuple[str, DeadLetter]]:
        entries = await self._call(self._redis().lrange(self._key("dead_letters"), 0, -1))
        letters = []
        for entry in entries:
            data = json.loads(entry)
            letters.append((data["event_id"], DeadLetter(base64.b64decode(data["envelope"]), data["error"])))
        return letters
