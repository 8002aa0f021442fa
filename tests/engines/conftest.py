"""Inputs for the Ray engine tests: a fixture's rows split into several files of every format."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.io.formats import read_output, write_as

FORMATS = ("csv", "csv.gz", "parquet", "jsonl", "tfrecord")


def split_inputs(
    csv_path: Path, schema: dict, target: Path, parts: int, formats: tuple[str, ...]
) -> list[Path]:
    """A fixture CSV's rows cut into `parts` files per format, in row order (part0-csv.csv, ...)."""
    with csv_path.open(newline="") as f:
        lines = list(csv.reader(f))
    header, rows = lines[0], lines[1:]
    size = math.ceil(len(rows) / parts)
    files = []
    for fmt in formats:
        for i in range(parts):
            d = target / f"{fmt}-{i}"
            d.mkdir(parents=True, exist_ok=True)
            part = d / "rows.csv"
            with part.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(header)
                w.writerows(rows[i * size : (i + 1) * size])
            out = write_as(fmt, part, schema, d)
            named = target / f"part{i}-{fmt.replace('.', '_')}.{fmt}"
            out.rename(named)
            files.append(named)
    return files


def read_rows(path: Path, strings: set[str] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """Rows of an output file, or of every data file of a Ray output directory (in file name order)."""
    paths = (
        sorted(p for p in path.iterdir() if not p.name.startswith((".", "_"))) if path.is_dir() else [path]
    )
    rows: list[dict[str, Any]] = []
    for p in paths:
        cols = read_output(p, strings)
        names = list(cols)
        rows += [dict(zip(names, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    return rows


def assert_same_rows(got: list[dict], want: list[dict], *, ordered: bool, context: str = "") -> None:
    """The same rows (numbers to 1e-5), in the same order or as the same multiset (sorted by all values)."""
    assert len(got) == len(want), f"{context}: {len(got)} rows, expected {len(want)}"
    if not ordered:
        got, want = sorted(got, key=_sort_key), sorted(want, key=_sort_key)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert set(g) == set(w), f"{context}: columns {sorted(g)} != {sorted(w)}"
        for k in w:
            _assert_close(g[k], w[k], f"{context}: row {i}, column {k!r}")


def _sort_key(row: dict) -> str:
    return json.dumps({k: _rounded(v) for k, v in sorted(row.items())}, default=str)


def _rounded(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    return str(v) if v is not None else None


def _assert_close(g: Any, w: Any, where: str) -> None:
    if isinstance(w, list):
        assert isinstance(g, list) and len(g) == len(w), f"{where}: {g!r} != {w!r}"
        for a, b in zip(g, w, strict=True):
            _assert_close(a, b, where)
    elif isinstance(w, float) or isinstance(g, float):
        assert g is not None and math.isclose(float(g), float(w), rel_tol=1e-5, abs_tol=1e-5), (
            f"{where}: {g} != {w}"
        )
    else:
        assert str(g) == str(w), f"{where}: {g!r} != {w!r}"


@pytest.fixture(autouse=True)
def _quiet_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
