"""Request deadlines without a timer per request (--rest_api_timeout_in_ms).

`asyncio.timeout` schedules and cancels a TimerHandle for every request: ~11 us each here, about 6% of a
batched REST request's event-loop time. Deadlines keeps the running requests' tasks in a dict instead, and
one sweep (while any are running, every tenth of the timeout, at most 50 ms apart) cancels those past
their deadline; `run` turns that cancellation into TimeoutError, as asyncio.timeout does. A request is
abandoned at most one sweep interval after its deadline. Any other cancellation (the client went away)
passes through unchanged. Everything runs on the server's one event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class Deadlines:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.interval = min(0.05, seconds / 10)
        self._running: dict[asyncio.Task[Any], float] = {}  # task -> its deadline (time.monotonic)
        self._expired: set[asyncio.Task[Any]] = set()  # cancelled by the sweep, not yet seen by run()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def sweeping(self) -> bool:
        """Whether the sweep is scheduled (only while some request is running)."""
        return self._sweeper is not None

    async def run(self, answer: Awaitable[T]) -> T:
        """`answer`'s result, or TimeoutError once `seconds` have passed (then `answer` is cancelled)."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel
            return await answer
        self._running[task] = time.monotonic() + self.seconds
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            return await answer
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # not ours: the caller is cancelled
            raise TimeoutError from None
        finally:
            self._running.pop(task, None)
            if task in self._expired:  # our cancellation, seen (or swallowed inside `answer`)
                self._expired.discard(task)
                if hasattr(task, "uncancel"):  # Python 3.11+: the task is no longer being cancelled
                    task.uncancel()

    async def _sweep(self) -> None:
        """Cancel the tasks past their deadline; ends when no request is running."""
        try:
            while self._running:
                await asyncio.sleep(self.interval)
                now = time.monotonic()
                for task in [t for t, deadline in self._running.items() if deadline <= now]:
                    del self._running[task]
                    self._expired.add(task)
                    task.cancel()
        finally:
            self._sweeper = None
