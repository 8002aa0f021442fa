"""A model version in a child process, called from the event loop (`--batching_process`).

Why: with batching on, the server's one event-loop thread is its bottleneck, and a batch thread in the same
process costs that thread ~9 us per request in GIL hand-offs, whatever the batch thread does. In a child
process the model runs under its own GIL on the other core, and the loop talks to it through pipes it
polls itself: no second Python thread in the server. The price: a second copy of the model in memory, and
a child start (~TensorFlow's import) when a version loads.

Wire format, both ways: a 4-byte big-endian length, then a pickle. Requests: (id, call key, merged data);
answers: (id, True, outputs) or (id, False, (status code name, message)).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .status import ServingError, as_serving_error

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
READY = b"R"
START_TIMEOUT = 300.0
F_SETPIPE_SZ = 1031  # Linux fcntl: a pipe's buffer size


class ModelProcess:
    """The parent's end: start() (blocking, in the loader's thread), then call() on the event loop."""

    def __init__(
        self,
        path: Path,
        intra_op_threads: int | None,
        inter_op_threads: int | None,
        tags: list[str] | None = None,
    ) -> None:
        self.path = path
        args = [sys.executable, "-m", "tfpredict.serving.model_process", str(path)]
        if intra_op_threads:
            args.append(f"--intra_op_threads={intra_op_threads}")
        if inter_op_threads:
            args.append(f"--inter_op_threads={inter_op_threads}")
        if tags is not None:
            args.append(f"--tags={','.join(tags)}")
        self._stderr = tempfile.TemporaryFile()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._stdout = self._proc.stdout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._buffer = bytearray()
        self._dead = False
        for pipe in (self._stdin, self._stdout):  # room for a large batch without blocking the loop
            try:
                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
        ready, _, _ = select.select([self._stdout], [], [], START_TIMEOUT)
        if not ready or self._stdout.read(1) != READY:
            self._proc.kill()
            self._proc.wait(timeout=10)
            why = self._last_error() if ready else f"not ready after {START_TIMEOUT:.0f}s"
            raise ModelLoadError(f"The model process for {path} failed to load it: {why}")
        self._stopping = False
        self.on_exit: Callable[[], None] | None = None  # called (in a watcher thread) if the child dies
        threading.Thread(target=self._watch, name=f"model-process-{self._proc.pid}", daemon=True).start()

    def _watch(self) -> None:
        """Wait for the child's exit: killed by the OS (OOM), crashed, or stopped by close()."""
        self._proc.wait()
        if self._stopping:
            return
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._died)
            except RuntimeError:  # the loop is closed
                pass
        else:
            self._dead = True
            log.error("The model process for %s exited: %s", self.path, self._last_error())
        if self.on_exit is not None:
            self.on_exit()

    def _last_error(self) -> str:
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit code {self._proc.returncode}"

    def call(self, loop: asyncio.AbstractEventLoop, key: Any, data: Any) -> asyncio.Future[Any]:
        """Send one merged batch; the future gets its outputs. On the event loop's thread only."""
        if self._loop is None:
            self._loop = loop
            os.set_blocking(self._stdout.fileno(), False)
            loop.add_reader(self._stdout.fileno(), self._readable)
        future = loop.create_future()
        if self._dead:
            future.set_exception(ServingError("UNAVAILABLE", f"The model process for {self.path} has exited"))
            return future
        request_id = self._next_id
        self._next_id += 1
        self._pending[request_id] = future
        payload = pickle.dumps((request_id, key, data), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._stdin.write(_LENGTH.pack(len(payload)) + payload)
            self._stdin.flush()
        except OSError:
            self._died()
        return future

    def _readable(self) -> None:
        try:
            chunk = os.read(self._stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            self._died()
            return
        buf = self._buffer
        buf += chunk
        while len(buf) >= 4:
            (n,) = _LENGTH.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            request_id, ok, result = pickle.loads(buf[4 : 4 + n])
            del buf[: 4 + n]
            future = self._pending.pop(request_id, None)
            if future is None or future.done():
                continue
            if ok:
                future.set_result(result)
            else:
                future.set_exception(ServingError(*result))

    def _died(self, stopped: bool = False) -> None:
        """The child is gone (or being stopped): stop reading it, fail what still waits for it."""
        if self._dead:
            return
        self._dead = True
        if self._loop is not None:
            self._loop.remove_reader(self._stdout.fileno())
        if stopped:
            err = ServingError("UNAVAILABLE", f"The model process for {self.path} was stopped")
        else:
            self._proc.poll()
            why = self._last_error()
            err = ServingError("UNAVAILABLE", f"The model process for {self.path} exited: {why}")
            log.error("%s", err.message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(err)
        self._pending.clear()

    def close(self) -> None:
        """Stop the child (from any thread); calls still pending fail as UNAVAILABLE."""
        self._stopping = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:  # the reader is removed on the loop's thread, before the child's end of file arrives
                loop.call_soon_threadsafe(self._died, True)
            except RuntimeError:  # the loop closed meanwhile: nothing reads the child any more
                self._dead = True
        else:
            self._dead = True
        try:
            self._stdin.close()  # the child's read sees end of file and returns
        except OSError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class SupervisedModelProcess:
    """A ModelProcess started again when it dies, as TF Serving's servable manager would reload a version:
    `on_state("LOADING")` when the child is gone, `on_state("AVAILABLE")` when its successor is ready.
    Calls made meanwhile fail at once as UNAVAILABLE (the batcher never waits on a dead child)."""

    RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # back-off between failed starts, then every 30 s

    def __init__(self, start: Callable[[], ModelProcess], on_state: Callable[[str], None]) -> None:
        self._start = start
        self._on_state = on_state
        self._closed = False
        self.restarts = 0
        self.child = self._supervise(start())

    def _supervise(self, child: ModelProcess) -> ModelProcess:
        child.on_exit = self._restart
        return child

    def call(self, loop: asyncio.AbstractEventLoop, key: Any, data: Any) -> asyncio.Future[Any]:
        return self.child.call(loop, key, data)

    def _restart(self) -> None:
        """In the dead child's watcher thread: start a new child until one loads or we are closed."""
        if self._closed:
            return
        self._on_state("LOADING")
        attempt = 0
        while not self._closed:
            log.warning("Restarting the model process for %s", self.child.path)
            try:
                child = self._start()
            except ModelLoadError as exc:
                log.error("%s", exc.message)
                time.sleep(self.RETRY_SECONDS[min(attempt, len(self.RETRY_SECONDS) - 1)])
                attempt += 1
                continue
            if self._closed:
                child.close()
                return
            self.restarts += 1
            self.child = self._supervise(child)
            self._on_state("AVAILABLE")
            return

    def close(self) -> None:
        self._closed = True
        self.child.close()


def main(argv: list[str] | None = None) -> int:
    """The child: load the version, answer batches until stdin closes."""
    ap = argparse.ArgumentParser(prog="python -m tfpredict.serving.model_process")
    ap.add_argument("export_dir")
    ap.add_argument("--intra_op_threads", type=int, default=None)
    ap.add_argument("--inter_op_threads", type=int, default=None)
    ap.add_argument("--tags", default=None, help="the meta graph's tag set, comma-separated")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which drains, then stops us
    from ..predictor import Predictor
    from .models import Servable

    try:
        predictor = Predictor.load(
            args.export_dir,
            intra_op_threads=args.intra_op_threads,
            inter_op_threads=args.inter_op_threads,
            tags=None if args.tags is None else args.tags.split(","),
        )
    except Exception as exc:  # the parent reports it, naming the path
        print(f"{type(exc).__name__}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    servable = Servable("child", 0, Path(args.export_dir), predictor, None)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(READY)
    stdout.flush()
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return 0
        (n,) = _LENGTH.unpack(head)
        request_id, key, data = pickle.loads(stdin.read(n))
        try:
            answer: tuple[Any, ...] = (request_id, True, servable.execute(key, data))
        except Exception as exc:
            err = as_serving_error(exc)
            answer = (request_id, False, (err.code, err.message))
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(_LENGTH.pack(len(payload)) + payload)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
