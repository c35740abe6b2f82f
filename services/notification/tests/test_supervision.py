"""The long-lived tasks: each outlives what goes wrong in one round (the store check, the
retention), and one that ends anyway is not a silent death: logged at ERROR, the service
failed for good (NOT_SERVING, not live: /healthz 503, health `liveness` NOT_SERVING) so the
orchestrator restarts it."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from grpc_health.v1 import health_pb2

from bookmesh_notification import reminders, server
from bookmesh_notification.__main__ import _keep_ready
from bookmesh_notification.admin import AdminServer
from bookmesh_notification.readiness import Readiness

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def served(readiness: Readiness) -> server.DrainingHealth:
    health = server.DrainingHealth(readiness.stopping)
    await server.follow_readiness(health, readiness)
    return health


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_task_that_dies_fails_the_service_for_good(caplog):
    readiness = Readiness()
    health = await served(readiness)
    await readiness.set_serving(True)
    admin = AdminServer(("127.0.0.1", 0), readiness)
    assert admin.respond("GET", "/healthz")[0] == 200

    async def consume() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("the consumer hit a bug")

    with caplog.at_level(logging.ERROR):
        task = readiness.supervise(asyncio.create_task(consume(), name="consumer"))
        await asyncio.gather(task, return_exceptions=True)
        await settle()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.task == "consumer" and "the consumer hit a bug" in record.error and record.exc_info
    assert not readiness.serving and not readiness.alive
    assert admin.respond("GET", "/readyz")[0] == 503
    assert admin.respond("GET", "/healthz")[0] == 503, "the orchestrator restarts it"
    assert health._server_status[server.SERVICE_NAME] == NOT_SERVING
    assert health._server_status[server.LIVENESS_NAME] == NOT_SERVING
    await readiness.set_serving(True)  # the store answers: still failed
    assert not readiness.serving


async def test_a_task_that_returns_before_the_stop_fails_the_service_and_one_cancelled_does_not():
    readiness = Readiness()
    await readiness.set_serving(True)

    async def forever() -> None:
        await asyncio.sleep(3600)

    cancelled = readiness.supervise(asyncio.create_task(forever(), name="reminders"))
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    await settle()
    assert readiness.alive and readiness.serving

    async def returns() -> None:
        return None

    await readiness.supervise(asyncio.create_task(returns(), name="pruning"))
    await settle()
    assert readiness.failure == "task pruning ended" and not readiness.serving


async def test_tasks_ending_at_the_stop_are_not_failures():
    readiness = Readiness()
    await readiness.set_serving(True)
    await readiness.mark_stopping()

    async def returns() -> None:
        return None

    await readiness.supervise(asyncio.create_task(returns(), name="consumer"))
    await settle()
    assert readiness.alive


class Unopenable:
    """A store whose open fails with `errors` in turn, then works."""

    def __init__(self, *errors: Exception) -> None:
        self._errors = list(errors)
        self.opened = False

    async def open(self) -> None:
        if self._errors:
            raise self._errors.pop(0)
        self.opened = True

    async def ping(self) -> None:
        pass


async def test_the_readiness_keeper_survives_what_the_store_throws(caplog):
    readiness = Readiness()
    store = Unopenable(PermissionError(13, "Permission denied", "/data"), RuntimeError("a bug"))
    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(_keep_ready(store, readiness, interval=0.05))
        async with asyncio.timeout(5):
            while not readiness.serving:
                assert not task.done(), task
                await asyncio.sleep(0.01)
    assert store.opened
    assert [r.message for r in caplog.records if r.levelno == logging.ERROR] == ["the store check failed"] * 2
    await readiness.mark_stopping()
    await asyncio.wait_for(task, 5)


class Pruned:
    """A store whose inbox pruning fails every other round."""

    def __init__(self) -> None:
        self.rounds = []

    async def prune_inbox(self, older_than: datetime) -> int:
        self.rounds.append(("inbox", older_than))
        if len(self.rounds) % 4 == 1:
            raise RuntimeError("a bug")
        return 1

    async def prune_notices(self, older_than: datetime) -> int:
        self.rounds.append(("notices", older_than))
        return 2


async def test_pruning_goes_on_after_a_failed_round_and_prunes_notices_by_their_retention():
    readiness = Readiness()
    await readiness.set_serving(True)
    store = Pruned()
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    pruning = reminders.run_pruning(
        store, readiness, 0.01, inbox_retention=86400, notice_retention=10 * 86400, clock=lambda: now
    )
    task = asyncio.create_task(pruning)
    async with asyncio.timeout(5):
        while len(store.rounds) < 4:
            assert not task.done(), task
            await asyncio.sleep(0.01)
    await readiness.mark_stopping()
    await asyncio.wait_for(task, 5)
    assert [kind for kind, _ in store.rounds[:4]] == ["inbox", "notices", "inbox", "notices"]
    assert store.rounds[1][1] == datetime(2026, 11, 21, tzinfo=timezone.utc), "notices after their retention"
    assert store.rounds[0][1] == datetime(2026, 11, 30, tzinfo=timezone.utc)
