"""What `tfpredict doctor` measured, as plain value objects: stages, sweep points, traced ops, the whole run.

advise.py turns a `Measurements` into a verdict; report.py renders it; `to_dict` is the JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .budget import DEFAULT_SECONDS


@dataclass
class Stage:
    """One stage of the job measured alone: rows through it, seconds spent, rows/s, share of the sum."""

    name: str  # "read", "convert", "model", "write", "end_to_end"
    label: str  # what a person reads: "read CSV", "feature conversion", ...
    rows: int
    seconds: float
    share: float | None = None  # of the sum of the four stage times (None for end_to_end)
    startup_seconds: float | None = None  # reading: the wait for the first chunk, paid once per file

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "rows": self.rows,
            "seconds": round(self.seconds, 4),
            "rows_per_s": finite(self.rows_per_s),
            "share": None if self.share is None else round(self.share, 4),
            **({} if self.startup_seconds is None else {"startup_seconds": round(self.startup_seconds, 4)}),
        }


@dataclass
class Point:
    """One measured setting of a sweep (e.g. {"batch_size": 1024}) and its rows/s."""

    settings: dict[str, Any]
    rows_per_s: float | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.settings,
            "rows_per_s": finite(self.rows_per_s),
            **({"note": self.note} if self.note else {}),
        }


@dataclass
class OpTime:
    """One graph node of the model by time in a traced run."""

    name: str
    op_type: str
    category: str
    ms: float
    share: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op_type,
            "category": self.category,
            "ms": round(self.ms, 3),
            "share": round(self.share, 4),
        }


@dataclass
class Measurements:
    """Everything doctor measured (advise.py turns it into a verdict and recommendations)."""

    export: str
    data: str
    input_format: str
    output_format: str
    signature: str
    model_path: str
    cpus: int
    sample_rows: int
    file_exhausted: bool
    batch_size: int  # the batch size the stages were measured at (the default of `tfpredict predict`)
    stages: dict[str, Stage]
    batch_sweep: list[Point] = field(default_factory=list)
    thread_sweep: list[Point] = field(default_factory=list)
    xla_sweep: list[Point] = field(default_factory=list)
    format_sweep: list[Point] = field(default_factory=list)
    end_to_end_sweep: list[Point] = field(default_factory=list)
    per_row: Point | None = None
    top_ops: list[OpTime] = field(default_factory=list)
    op_categories: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    budget: float = DEFAULT_SECONDS


def finite(x: float | None) -> float | None:
    """x rounded to one decimal for JSON, None when unknown or infinite."""
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), 1)
