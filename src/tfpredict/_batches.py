"""The internal batches of one predict() call: the model call on batch i runs in a helper thread while the
caller's thread converts batch i+1 (both release the GIL for most of their work), and errors come out as a
plain loop would raise them: in input order, row numbers counted from the start of the whole input."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .errors import InputError

Prepared = TypeVar("Prepared")
Result = TypeVar("Result")

_ROW = re.compile(r"^Row (\d+):")


def overlapped(
    starts: Sequence[int],
    prepare: Callable[[int], Prepared],
    call: Callable[[Prepared], Result],
) -> list[Result]:
    """[call(prepare(s)) for s in starts], with prepare of the next start overlapping call of this one.

    One helper thread (none for a single start). At most two prepared batches exist at once. The first
    failure in loop order is raised: a model error of batch i comes before a conversion error of batch i+1,
    which waits until batch i's call is done.
    """
    if len(starts) <= 1:
        return [call(prepare(s)) for s in starts]
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfpredict-model") as pool:
        running: Future[Result] = pool.submit(call, prepare(starts[0]))
        for start in starts[1:]:
            try:
                ready = prepare(start)
            except BaseException:
                running.result()  # an error of the call before it was first in loop order
                raise
            results.append(running.result())
            running = pool.submit(call, ready)
        results.append(running.result())
    return results


def rows_from(start: int, exc: InputError) -> InputError:
    """exc with its "Row k:" counted from the whole input's first row, for a batch that begins at `start`."""
    if start == 0:
        return exc
    match = _ROW.match(exc.message)
    if match is None:
        return exc
    shifted = InputError(f"Row {int(match.group(1)) + start}:{exc.message[match.end() :]}")
    shifted.__cause__ = exc.__cause__
    return shifted
