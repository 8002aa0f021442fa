"""Pipelined stages: threads joined by small bounded queues, with one stop flag and the first error.

A stage blocked on a full or empty queue wakes every `POLL` seconds to see whether the run was stopped
(another stage failed, or the caller was interrupted), so no thread outlives its run by more than that.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

POLL = 0.1  # seconds a blocked stage waits before checking whether the run was stopped

#: What a stage puts on its queue after its last item.
DONE = object()


class Stopped(Exception):
    """Raised inside a stage when another stage failed or the run was interrupted."""


class Run:
    """Shared state of one pipelined run: the stop flag, the first error any stage hit, busy seconds."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self.busy: dict[str, float] = {}

    def timed(self, stage: str, started: float) -> None:
        self.busy[stage] = self.busy.get(stage, 0.0) + time.perf_counter() - started

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def put(self, q: queue.Queue[Any], item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=POLL)
                return
            except queue.Full:
                continue
        raise Stopped

    def get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=POLL)
            except queue.Empty:
                continue
        raise Stopped


def start_stage(run: Run, name: str, target: Callable[[], None]) -> threading.Thread:
    """Run target in a daemon thread; its error (not a stop) stops the run and is kept for the caller."""

    def body() -> None:
        try:
            target()
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread and re-raised there
            run.fail(exc)

    t = threading.Thread(target=body, name=f"tfpredict-{name}", daemon=True)
    t.start()
    return t


__all__ = ["DONE", "POLL", "Run", "Stopped", "start_stage"]
