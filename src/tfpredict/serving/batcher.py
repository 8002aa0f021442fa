"""Dynamic batching: concurrent small requests for the same signature are merged into one model call.

A request becomes a Task holding its inputs (a dict of arrays sharing a first, batch dimension, or a list
of row dicts) and a Future. Batch threads take the oldest task and every queued task with the same key,
up to max_batch_size rows, waiting at most batch_timeout_micros for a batch to fill; one model call
answers them all and each Future gets its own slice of the outputs. A full queue sheds load at once
with RESOURCE_EXHAUSTED instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

from .batch_data import Outputs, allowed_size, group_of, join, merge, pad, parts, split
from .config import BatchingParameters
from .status import ServingError

log = logging.getLogger(__name__)


class Task:
    """One request's rows; its answer goes to a concurrent Future, or to an asyncio Future of `loop`."""

    __slots__ = ("key", "group", "data", "size", "future", "loop", "enqueued")

    def __init__(
        self,
        key: Hashable,
        data: Any,
        size: int,
        loop: asyncio.AbstractEventLoop | None,
        group: Hashable = None,
    ) -> None:
        self.key = key
        self.group = key if group is None else group  # tasks of one group may share a batch
        self.data = data
        self.size = size
        self.loop = loop
        self.future: Any = loop.create_future() if loop is not None else Future()
        self.enqueued = time.perf_counter()


class _BatchQueue:
    """What both batchers share: the queue of tasks, admission (closing, load shedding), taking one batch
    (the oldest task and the queued tasks of its key, up to max_batch_size rows), and cutting a batch's
    outputs into each task's answer."""

    def __init__(
        self, params: BatchingParameters, on_batch: Callable[[int, list[float]], None] | None
    ) -> None:
        self.params = params
        self._on_batch = on_batch
        self._queue: collections.deque[Task] = collections.deque()
        self._queued_rows = 0
        self._max_queued_rows = params.max_batch_size * params.max_enqueued_batches
        self._closed = False
        self.dropped = 0  # queued requests whose client went away before their batch ran
        self._limit = params.execution_limit  # rows per model call
        self._pad_inner = params.pad_variable_length_inputs

    def _tasks(self, key: Hashable, data: Any, size: int, loop: Any) -> tuple[list[Task], Any]:
        """Admit a request (the caller holds the queue): its task, or with enable_large_batch_splitting
        the tasks of its parts of at most max_execution_batch_size rows, and the future of its answer."""
        self._admit(size)
        group = group_of(key, self._pad_inner)
        if size <= self._limit:
            task = Task(key, data, size, loop, group)
            return [task], task.future
        pieces = [Task(key, d, n, loop, group) for d, n in parts(data, size, self._limit)]
        return pieces, _joined(pieces, loop)

    def _admit(self, size: int) -> None:
        """Refuse a request when its version is closing or it is over max_batch_size, or shed it when the
        queue is full."""
        if self._closed:
            raise ServingError("UNAVAILABLE", "The model version is being unloaded; retry the request")
        if size > self.params.max_batch_size:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Task size {size} is larger than maximum input batch size {self.params.max_batch_size}",
            )
        if self._queued_rows + size > self._max_queued_rows and self._queue:
            raise ServingError(
                "RESOURCE_EXHAUSTED",
                "The batch scheduling queue to which this task was submitted is full "
                f"({self._queued_rows} rows queued, limit {self._max_queued_rows} = "
                "max_batch_size x max_enqueued_batches)",
            )

    def _rows_for(self, group: Hashable) -> int:
        return sum(t.size for t in self._queue if t.group == group)

    def _take_batch(self) -> list[Task]:
        """The oldest task and the queued tasks of its key, up to max_batch_size rows; tasks whose client
        went away (future cancelled: a reset stream, a closed connection) are dropped, never run."""
        self._drop_cancelled()
        if not self._queue:
            return []
        first = self._queue.popleft()
        taken, rows = [first], first.size
        limit = self._limit
        kept: list[Task] = []
        while self._queue and rows < limit:
            task = self._queue.popleft()
            if task.future.cancelled():
                self._queued_rows -= task.size
                self.dropped += 1
            elif task.group == first.group and rows + task.size <= limit:
                taken.append(task)
                rows += task.size
            else:
                kept.append(task)
        self._queue.extendleft(reversed(kept))
        self._queued_rows -= rows
        return taken

    def _drop_cancelled(self) -> None:
        while self._queue and self._queue[0].future.cancelled():
            self._queued_rows -= self._queue.popleft().size
            self.dropped += 1

    def _answers(
        self, tasks: list[Task], outputs: Outputs, sizes: list[int], total: int, target: int
    ) -> list[Outputs]:
        """Drop the padding rows, record the batch, and give each task its slice of the outputs."""
        if target > total:
            outputs = {
                k: v[:total] if getattr(v, "ndim", 0) and v.shape[0] == target else v
                for k, v in outputs.items()
            }
        if self._on_batch is not None:
            now = time.perf_counter()
            self._on_batch(total, [now - t.enqueued for t in tasks])
        return split(outputs, sizes, total)


class Batcher(_BatchQueue):
    """Batching queue and threads for one loaded model version."""

    def __init__(
        self,
        params: BatchingParameters,
        run: Callable[[Any, Any], Outputs],
        name: str = "model",
        on_batch: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        super().__init__(params, on_batch)
        self._run = run
        self._cond = threading.Condition()
        self._waiting = 0  # batch threads inside cond.wait()
        self._threads = [
            threading.Thread(target=self._loop, name=f"batch-{name}-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for t in self._threads:
            t.start()

    def submit(
        self, key: Hashable, data: Any, size: int, loop: asyncio.AbstractEventLoop | None = None
    ) -> Any:
        """Queue a request; returns a Future (an asyncio one of `loop` when given: call from that loop)."""
        with self._cond:
            tasks, future = self._tasks(key, data, size, loop)
            self._queue.extend(tasks)
            self._queued_rows += size
            if self._waiting:  # a busy batch thread looks at the queue again when its call ends
                self._cond.notify()
        return future

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking tasks; the threads finish what is queued, then exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ batch threads
    def _take(self) -> list[Task] | None:
        p = self.params
        timeout = p.batch_timeout_micros / 1e6
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._wait()
            first = self._queue[0]
            if timeout > 0 and first.size < self._limit:
                deadline = first.enqueued + timeout
                while not self._closed:
                    if self._rows_for(first.group) >= self._limit:
                        break
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._wait(remaining)
                    if not self._queue or self._queue[0] is not first:
                        break  # another batch thread took it; start over with the new oldest task
                if not self._queue or self._queue[0] is not first:
                    return []
            taken = self._take_batch()
            if self._queue:
                self._cond.notify()
            return taken

    def _wait(self, timeout: float | None = None) -> None:
        """cond.wait(), counted: submit() notifies only when some thread waits (holding the lock)."""
        self._waiting += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1

    def _loop(self) -> None:
        while True:
            tasks = self._take()
            if tasks is None:
                return
            if tasks:
                self._execute(tasks)

    def _execute(self, tasks: list[Task]) -> None:
        sizes = [t.size for t in tasks]
        total = sum(sizes)
        try:
            data = merge([t.data for t in tasks], self._pad_inner)
            target = allowed_size(total, self.params.allowed_batch_sizes)
            outputs = self._run(tasks[0].key, pad(data, total, target))
        except BaseException as exc:  # every waiting request must hear about the failure
            _deliver(tasks, [exc] * len(tasks), failed=True)
            return
        _deliver(tasks, self._answers(tasks, outputs, sizes, total, target), failed=False)


def _deliver(tasks: list[Task], values: list[Any], failed: bool) -> None:
    """Answer every task of a batch; asyncio tasks get one wake-up of their loop per batch, not one each."""
    by_loop: dict[Any, list[tuple[Any, Any]]] = {}
    for t, v in zip(tasks, values, strict=True):
        if t.loop is None:
            if not t.future.done():
                t.future.set_exception(v) if failed else t.future.set_result(v)
        else:
            by_loop.setdefault(t.loop, []).append((t.future, v))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, pairs, failed)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle(pairs: list[tuple[Any, Any]], failed: bool) -> None:
    for fut, v in pairs:
        if not fut.done():  # cancelled when the client went away
            fut.set_exception(v) if failed else fut.set_result(v)


def _joined(pieces: list[Task], loop: asyncio.AbstractEventLoop | None) -> Any:
    """One future for a request cut into parts: the parts' outputs joined, or the first failure. Cancelling
    it cancels the parts still queued (they are then dropped, never run)."""
    outer: Any = loop.create_future() if loop is not None else Future()
    sizes = [t.size for t in pieces]

    def part_done(_: Any) -> None:
        if outer.done():
            return
        for t in pieces:
            if t.future.done() and (t.future.cancelled() or t.future.exception() is not None):
                outer.cancel() if t.future.cancelled() else outer.set_exception(t.future.exception())
                return
        if all(t.future.done() for t in pieces):
            outer.set_result(join([t.future.result() for t in pieces], sizes))

    def outer_done(f: Any) -> None:
        if f.cancelled():
            for t in pieces:
                t.future.cancel()

    for t in pieces:
        t.future.add_done_callback(part_done)
    outer.add_done_callback(outer_done)
    return outer


class LoopBatcher(_BatchQueue):
    """Batching on the event loop, each merged batch run by a `call(loop, key, data) -> Future` (a model
    process): the same parameters as Batcher, with no thread of its own. num_batch_threads bounds the
    batches in flight; batch_timeout_micros waits for a batch to fill, as in Batcher."""

    def __init__(
        self,
        params: BatchingParameters,
        call: Callable[[asyncio.AbstractEventLoop, Hashable, Any], asyncio.Future[Outputs]],
        on_batch: Callable[[int, list[float]], None] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(params, on_batch)
        self._call = call
        self._close = close
        self._inflight = 0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None

    def submit(
        self, key: Hashable, data: Any, size: int, loop: asyncio.AbstractEventLoop | None = None
    ) -> Any:
        """Queue a request (on the event loop's thread); returns an asyncio Future of its outputs."""
        if loop is None:
            raise ValueError("LoopBatcher.submit needs the event loop")
        tasks, future = self._tasks(key, data, size, loop)
        self._queue.extend(tasks)
        self._queued_rows += size
        if not self._scheduled:  # once per turn of the loop: every request read in it can join the batch
            self._scheduled = True
            loop.call_soon(self._dispatch, loop)
        return future

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        p = self.params
        while self._queue and self._inflight < p.num_batch_threads:
            first = self._queue[0]
            if p.batch_timeout_micros > 0 and first.size < self._limit and not self._closed:
                wait = first.enqueued + p.batch_timeout_micros / 1e6 - time.perf_counter()
                if wait > 0 and self._rows_for(first.group) < self._limit:
                    if self._timer is None:
                        self._timer = loop.call_later(wait, self._on_timer, loop)
                    return
            tasks = self._take_batch()
            if tasks:
                self._run(loop, tasks)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._dispatch(loop)

    def _run(self, loop: asyncio.AbstractEventLoop, tasks: list[Task]) -> None:
        sizes = [t.size for t in tasks]
        total = sum(sizes)
        target = allowed_size(total, self.params.allowed_batch_sizes)
        try:
            data = merge([t.data for t in tasks], self._pad_inner)
            future = self._call(loop, tasks[0].key, pad(data, total, target))
        except BaseException as exc:
            _settle([(t.future, exc) for t in tasks], failed=True)
            return
        self._inflight += 1
        future.add_done_callback(lambda f: self._done(loop, f, tasks, sizes, total, target))

    def _done(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Outputs],
        tasks: list[Task],
        sizes: list[int],
        total: int,
        target: int,
    ) -> None:
        self._inflight -= 1
        exc = future.exception()
        if exc is not None:
            _settle([(t.future, exc) for t in tasks], failed=True)
        else:
            answers = self._answers(tasks, future.result(), sizes, total, target)
            _settle(list(zip([t.future for t in tasks], answers, strict=True)), False)
        if self._queue:
            self._dispatch(loop)

    def close(self, timeout: float = 5.0) -> None:
        """From any thread: take no more requests, let queued and running batches finish, stop the runner."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while (self._queue or self._inflight) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._close is not None:
            self._close()
