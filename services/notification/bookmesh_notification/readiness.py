"""Whether the service can do its work, one value shared by everything that asks (as
src/readiness.rs): gRPC health, the admin port's /readyz, the gate in front of the handlers,
and the long-lived tasks (consumer, reminders, watch streams) that end when a stop signal
arrives.

Those tasks are supervised (`supervise`): one that ends before the stop signal, by an exception
or otherwise, is logged at ERROR and leaves the service **failed**, for good: NOT_SERVING and
not live (`/healthz` 503, health `liveness` NOT_SERVING), so the orchestrator restarts it. A
replica whose consumer died must not keep looking healthy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger("bookmesh_notification")


class Readiness:
    """Not ready, not started, not stopping, until told otherwise."""

    def __init__(self) -> None:
        self._serving = False
        #: Latches on the first ready store: its tables exist from then on.
        self.started = False
        #: Set when a stop signal arrived, once NOT_SERVING is published: never ready again.
        self.stopping = asyncio.Event()
        self._stop_requested = False
        self._started_event = asyncio.Event()
        self._listeners: list[Callable[[bool], Awaitable[None]]] = []
        #: Why the service is failed for good (a supervised task ended), or None.
        self.failure: str | None = None
        self._notifying: set[asyncio.Task] = set()

    @property
    def serving(self) -> bool:
        return self._serving

    @property
    def alive(self) -> bool:
        """False once failed: the process should be restarted (liveness)."""
        return self.failure is None

    def on_change(self, listener: Callable[[bool], Awaitable[None]]) -> None:
        """Calls `listener(serving)` at every change (health follows readiness this way)."""
        self._listeners.append(listener)

    async def set_serving(self, serving: bool) -> None:
        """Reports whether the store answers; ignored once stopping."""
        if serving:
            self.started = True
            self._started_event.set()
        serving = serving and not self._stop_requested and self.failure is None
        if serving != self._serving:
            self._serving = serving
            await self._notify()

    async def _notify(self) -> None:
        for listener in self._listeners:
            await listener(self._serving)

    def supervise(self, task: asyncio.Task) -> asyncio.Task:
        """Watches `task`, which must run until the service stops: if it ends before (raises,
        or returns), logs why at ERROR and fails the service."""
        task.add_done_callback(self._task_ended)
        return task

    def _task_ended(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if self._stop_requested:
            if error is not None:
                log.error("a task failed while stopping", exc_info=error, extra={"task": task.get_name()})
            return
        log.error(
            "a background task ended: the service is failed and must be restarted",
            exc_info=error,
            extra={"task": task.get_name(), "error": repr(error) if error else "returned"},
        )
        self.fail(f"task {task.get_name()} ended")

    def fail(self, reason: str) -> None:
        """Not ready and not live from now on (health follows at once)."""
        if self.failure is not None:
            return
        self.failure = reason
        self._serving = False
        # Listeners are coroutines; a done callback is not one. Kept until run (no GC).
        notifying = asyncio.get_running_loop().create_task(self._notify())
        self._notifying.add(notifying)
        notifying.add_done_callback(self._notifying.discard)

    async def mark_stopping(self) -> None:
        """A stop signal arrived: not ready from now on, whatever the store says.

        NOT_SERVING is published before `stopping` is set: what ends on `stopping` (health
        watches) then has it to send last, rather than racing its publication."""
        self._stop_requested = True
        await self.set_serving(False)
        self.stopping.set()

    async def wait_started(self) -> None:
        await self._started_event.wait()

    async def sleep(self, seconds: float) -> bool:
        """Sleeps `seconds`, or less if stopping begins; True when stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return False
        return True
