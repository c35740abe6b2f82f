"""Whether the service can do its work, one value shared by everything that asks (as
src/readiness.rs): gRPC health, the admin port's /readyz, the gate in front of the handlers,
and the long-lived tasks (consumer, reminders, watch streams) that end when a stop signal
arrives.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable


class Readiness:
    """Not ready, not started, not stopping, until told otherwise."""

    def __init__(self) -> None:
        self._serving = False
        #: Latches on the first ready store: its tables exist from then on.
        self.started = False
        #: Set when a stop signal arrives: never ready again.
        self.stopping = asyncio.Event()
        self._started_event = asyncio.Event()
        self._listeners: list[Callable[[bool], Awaitable[None]]] = []

    @property
    def serving(self) -> bool:
        return self._serving

    def on_change(self, listener: Callable[[bool], Awaitable[None]]) -> None:
        """Calls `listener(serving)` at every change (health follows readiness this way)."""
        self._listeners.append(listener)

    async def set_serving(self, serving: bool) -> None:
        """Reports whether the store answers; ignored once stopping."""
        if serving:
            self.started = True
            self._started_event.set()
        serving = serving and not self.stopping.is_set()
        if serving != self._serving:
            self._serving = serving
            for listener in self._listeners:
                await listener(serving)

    async def mark_stopping(self) -> None:
        """A stop signal arrived: not ready from now on, whatever the store says."""
        self.stopping.set()
        await self.set_serving(False)

    async def wait_started(self) -> None:
        await self._started_event.wait()

    async def sleep(self, seconds: float) -> bool:
        """Sleeps `seconds`, or less if stopping begins; True when stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return False
        return True
