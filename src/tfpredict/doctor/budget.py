"""The time budget of one doctor run and the one loop that times a stage within a slice of it.

Every measurement is bounded by time, not by rows: a stage runs over the sample until its time slice is
spent (at least one call), so a slow model and a fast reader are both measured within one budget.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_SECONDS = 60.0


class Budget:
    """The wall-clock budget of one doctor run, handed out in slices of what is left after loading."""

    def __init__(self, seconds: float) -> None:
        self.total = float(seconds)
        self.start = time.perf_counter()
        self.usable = self.total  # rebased once the export is loaded

    def rebase(self) -> None:
        """Slices are fractions of the time left now (loading TensorFlow and the export is not ours)."""
        self.usable = max(self.left, 0.2 * self.total)

    @property
    def used(self) -> float:
        return time.perf_counter() - self.start

    @property
    def left(self) -> float:
        return self.total - self.used

    def slice(self, fraction: float, floor: float = 0.05) -> float:
        """A time slice of `fraction` of the usable budget, never more than what is left (but >= floor)."""
        return max(floor, min(fraction * self.usable, self.left))

    def allows(self, fraction: float) -> bool:
        """Is more than `fraction` of the usable budget left?"""
        return self.left > fraction * self.usable


def timed_rate(
    call: Callable[[Any], int], items: Sequence[Any], seconds: float, warmup: bool = True
) -> tuple[int, float]:
    """Call `call(item)` over `items` (cycling) until `seconds` have passed, at least once; (rows, seconds).

    warmup: one untimed call first (first use of a shape allocates; a session may optimize on first run).
    """
    if warmup:
        call(items[0])
    rows, start = 0, time.perf_counter()
    for item in itertools.cycle(items):
        rows += call(item)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return rows, elapsed
    raise AssertionError("unreachable")  # pragma: no cover
