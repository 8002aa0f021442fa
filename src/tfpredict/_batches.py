"""The internal batches of one predict() call: a helper thread converts batch i+1 while the caller's thread
runs the model on batch i (both release the GIL for most of their work), and errors come out as a plain loop
would raise them: in input order, row numbers counted from the start of the whole input."""

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

    call runs in the caller's thread, prepare of every start but the first in one helper thread (none for a
    single start), one start ahead: at most two prepared batches exist at once. The model's results never
    wait for a thread switch, and the next batch is usually ready when the model is done (conversion is the
    shorter step). The first failure in loop order is raised: a model error of batch i comes before a
    conversion error of batch i+1, which is raised only once batch i's call is done.
    """
    if len(starts) <= 1:
        return [call(prepare(s)) for s in starts]
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfpredict-convert") as pool:
        ready = prepare(starts[0])
        for k in range(len(starts)):
            upcoming: Future[Prepared] | None = None
            if k + 1 < len(starts):
                upcoming = pool.submit(prepare, starts[k + 1])
            try:
                results.append(call(ready))
            except BaseException:
                if upcoming is not None:
                    upcoming.cancel()  # if it already runs, leaving the pool waits for it
                raise
            if upcoming is not None:
                ready = upcoming.result()
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
