"""What every engine shares, so the local engine (`pipeline.py`) and Ray's agree: which outputs and --keep
columns a job may ask for, the output table's schema, and the first bad row of a batch that fails."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InputError, UsageError
from ..io.types import first_failing_row, list_depth
from ..io.writers import column_from_numpy

_ROW_PREFIX = re.compile(r"^Row \d+:\s*")


def selected_outputs(available: Sequence[str], outputs: Sequence[str] | None, signature: str) -> list[str]:
    """The outputs a job writes (all the signature's by default); UsageError naming any it does not have."""
    selected = list(outputs) if outputs else list(available)
    unknown = [o for o in selected if o not in available]
    if unknown:
        raise UsageError(
            f"unknown output(s) {', '.join(unknown)}; the signature {signature!r} has: {', '.join(available)}"
        )
    return selected


def check_keep(keep: Sequence[str], selected: Sequence[str]) -> None:
    """--keep columns go beside the outputs in one table: none may share an output's name."""
    clash = [k for k in keep if k in selected]
    if clash:
        raise UsageError(f"--keep column(s) {', '.join(clash)} have the same name as model outputs")


def output_schema(
    selected: list[str],
    declared: dict[str, pa.DataType],
    outputs: dict[str, np.ndarray] | None,
    batch: pa.RecordBatch | None,
    keep: Sequence[str],
) -> pa.Schema:
    """--keep columns first (their input types), then the selected outputs (declared types; an output of
    unknown rank takes the shape of the first batch)."""
    fields = []
    for k in keep:
        t = batch.column(k).type if batch is not None else pa.string()  # empty input: ids as text
        fields.append(pa.field(k, pa.string() if pa.types.is_null(t) else t))
    for name in selected:
        t = declared[name]
        if outputs is not None and pa.types.is_list(t) and not _rank_known(outputs[name], t):
            t = column_from_numpy(outputs[name]).type
        fields.append(pa.field(name, t))
    return pa.schema(fields)


def _rank_known(a: np.ndarray, t: pa.DataType) -> bool:
    depth = list_depth(t)
    return a.ndim - 1 == depth or (a.ndim >= 2 and all(d == 1 for d in a.shape[1:]) and depth == 0)


def without_row_prefix(message: str) -> str:
    """A converter's message without its "Row 3: " (the caller names the row by its file and line)."""
    return _ROW_PREFIX.sub("", message)


def first_bad_row(convert: Callable[[pa.RecordBatch], Any], batch: pa.RecordBatch) -> tuple[int, str | None]:
    """The first row of a batch that `convert` refuses (bisecting), and its message without "Row n: "."""

    def fails(start: int, stop: int) -> str | None:
        try:
            convert(batch.slice(start, stop - start))
        except InputError as e:
            return e.message
        return None

    i, message = first_failing_row(batch.num_rows, fails)
    return i, None if message is None else without_row_prefix(message)


__all__ = ["check_keep", "first_bad_row", "output_schema", "selected_outputs", "without_row_prefix"]
