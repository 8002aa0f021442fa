"""The internal batches of one predict() call: the caller's thread converts the next batch while helper
threads run the model on the ones before it (TensorFlow releases the GIL while it computes), and errors
come out as a plain loop would raise them: in input order, row numbers counted from the start of the whole
input."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .errors import InputError

Prepared = TypeVar("Prepared")
Result = TypeVar("Result")

#: Model calls in flight at once. One call of a small dense model keeps ~1.6 of 2 cores busy: its ops are
#: too small to split well, and turning its string outputs into Python objects holds the GIL. A second call
#: fills those gaps (the batch job's MODEL_WORKERS does the same, for the same reason); a third keeps one
#: ready while the caller's conversion holds the GIL. predict() on 100,000 bench_dnn rows over the model
#: alone, median of 60 alternating pairs (AMD EPYC AVX-512, 2 cores): 2 in flight 0.931, 3 0.986, 4 1.001.
CALLS_IN_FLIGHT = 3

_ROW = re.compile(r"^Row (\d+):")


def overlapped(
    starts: Sequence[int],
    prepare: Callable[[int], Prepared],
    call: Callable[[Prepared], Result],
    in_flight: int = CALLS_IN_FLIGHT,
) -> list[Result]:
    """[call(prepare(s)) for s in starts], with up to `in_flight` calls running at once in helper threads
    while the caller's thread prepares the next start; the results in the order of `starts`.

    A single start runs in the caller's thread, without helper threads. Otherwise at most in_flight + 1
    prepared batches exist at once. The first failure in loop order is raised: a model error of batch i
    comes before a conversion error of batch i+1, which is raised only once the calls before it are done;
    nothing after a failed conversion starts, and calls not yet started when one fails never do.
    """
    if len(starts) <= 1:
        return [call(prepare(s)) for s in starts]
    results: list[Result] = []
    running: deque[Future[Result]] = deque()
    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="tfpredict-model") as pool:
        try:
            for start in starts:
                failed: BaseException | None = None
                try:
                    ready = prepare(start)
                except BaseException as exc:
                    failed = exc
                if failed is not None:
                    while running:  # a loop would have raised an earlier call's failure first
                        results.append(running.popleft().result())
                    raise failed
                while len(running) >= in_flight:
                    results.append(running.popleft().result())
                running.append(pool.submit(call, ready))
            while running:
                results.append(running.popleft().result())
        finally:
            for future in running:
                future.cancel()  # those already running finish before the pool is left
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
