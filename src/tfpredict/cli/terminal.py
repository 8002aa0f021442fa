"""Terminal concerns of the command line in one place: the progress bar, SIGTERM, and hiding what C++ code
(TensorFlow, Ray core) writes to fd 2, which no log level reaches."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports a Ctrl-C'd command
TERMINATED_EXIT = 143  # 128 + SIGTERM


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C (temporary output removed), then exit 143."""


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread, so `finally` blocks (temporary output) run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def native_stderr_hidden(hide: bool = True, python_stderr: bool = True) -> Iterator[None]:
    """Send what C++ code writes to fd 2 to /dev/null. python_stderr: Python's sys.stderr (progress bars,
    our messages) still reaches the terminal, through a copy of the real fd 2; otherwise it is hidden too."""
    if not hide:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    previous = sys.stderr
    if python_stderr:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        if python_stderr:
            sys.stderr.close()
            sys.stderr = previous
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up chatter (oneDNN, CUDA, absl) goes to fd 2 before any log level applies;
    a command-line user should see only our one-line messages, so hide fd 2 while it loads."""
    # 3: graph-optimizer chatter at model load (e.g. type inference on Estimator summary ops) is logged as
    # errors although nothing failed; tfpredict reports real failures itself.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_hidden(python_stderr=False):
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")  # device discovery logs its CUDA failure here


def is_terminal() -> bool:
    return sys.stderr.isatty()


class Progress:
    """tqdm bar with rows/s and ETA on a terminal (the total is estimated for text files); off otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def start(self, files: list[Any]) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        from ..io.files import estimate_rows

        self.bar = tqdm(
            total=estimate_rows(files),
            unit=" rows",
            unit_scale=True,
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def update(self, rows: int) -> None:
        if self.bar is not None:
            if self.bar.total is not None and self.bar.n + rows > self.bar.total:
                self.bar.total = self.bar.n + rows  # the estimate was short: never show more than 100%
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def say(text: str) -> None:
    """One `tfpredict: ...` line on stderr."""
    print(f"tfpredict: {text}", file=sys.stderr)
