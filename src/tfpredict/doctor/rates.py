"""One stage of the job timed alone (conversion, the model, writing, per-row calls) and the real pipelined
job on a sample file, each within a time slice.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..io.writers import open_writer, output_format, output_type, outputs_to_batch
from .budget import timed_rate

if TYPE_CHECKING:
    from ..predictor import Feeds, Predictor

MAX_PREPARED_BATCHES = 48  # distinct converted batches cycled through by one sweep point


def batches_of(table: pa.Table, size: int, limit: int = MAX_PREPARED_BATCHES) -> list[pa.Table]:
    """Up to `limit` consecutive slices of `size` rows (only full ones, unless the table is smaller)."""
    if table.num_rows <= size:
        return [table]
    count = min(limit, table.num_rows // size)
    return [table.slice(i * size, size) for i in range(count)]


def output_schema(predictor: Predictor, outputs: dict[str, np.ndarray]) -> pa.Schema:
    """The output columns exactly as `tfpredict predict` writes them (the job's own schema function)."""
    from ..pipeline import output_schema as job_schema

    declared = {
        k: output_type(t.dtype, t.shape) for k, t in predictor.signatures[predictor.signature].outputs.items()
    }
    return job_schema(list(outputs), declared, outputs, None, ())


def write_rate(
    predictor: Predictor, outputs: list[dict[str, np.ndarray]], directory: Path, fmt: str, seconds: float
) -> tuple[int, float]:
    """Rows/s of turning model outputs into Arrow and writing them in format fmt (output files rewritten)."""
    schema = output_schema(predictor, outputs[0])
    path = directory / f"out.{fmt}"
    rows, start = 0, time.perf_counter()
    writer = open_writer(path, schema, *output_format(path))  # one file, as the job writes one
    for out in itertools.cycle(outputs):
        writer.write(outputs_to_batch(out, schema))
        rows += len(next(iter(out.values())))
        if time.perf_counter() - start >= seconds:
            break
    writer.close()
    return rows, time.perf_counter() - start


def model_rate(
    predictor: Predictor, feeds: list[Feeds], seconds: float, warmup: bool = True
) -> tuple[int, float]:
    def call(f: Feeds) -> int:
        predictor.predict_feeds(f)
        return f.num_rows

    return timed_rate(call, feeds, seconds, warmup=warmup)


def end_to_end(
    predictor: Predictor, path: Path, directory: Path, fmt: str, batch_size: int, min_seconds: float = 0.0
) -> tuple[int, float]:
    """The real pipelined job (`predict_files`) on a sample file: rows and wall seconds of its fastest run.

    A pass shorter than `min_seconds` is repeated until that much time was spent (the fastest run counts:
    on a shared machine a run can lose time to a neighbour, never gain it).
    """
    from ..pipeline import predict_files

    best: tuple[int, float] | None = None
    spent = 0.0
    while best is None or spent < min_seconds:
        result = predict_files(predictor, path, directory / f"e2e.{fmt}", batch_size=batch_size)
        spent += result.seconds
        if best is None or result.rows / max(result.seconds, 1e-9) > best[0] / max(best[1], 1e-9):
            best = (result.rows, result.seconds)
    return best


def per_row_rate(predictor: Predictor, table: pa.Table, seconds: float) -> tuple[int, float]:
    """One predict() call per row: the naive `input_fn` / serving-loop pattern (each row a one-row table, so
    multi-valued features need no special casing)."""
    rows = [table.slice(i, 1) for i in range(min(table.num_rows, 200))]

    def call(row: pa.Table) -> int:
        predictor.predict(row)
        return 1

    return timed_rate(call, rows, seconds)
