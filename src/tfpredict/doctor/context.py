"""The context one doctor run's phases share (`Run`), and the thread settings they sweep."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..io.readers import InputFile
from .budget import Budget
from .results import Measurements, Stage
from .sample import Sample

if TYPE_CHECKING:
    from ..predictor import Feeds, Predictor

Threads = tuple[int | None, int | None]  # (intra-op, inter-op); None is TensorFlow's default


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_settings(cpus: int) -> list[Threads]:
    """(intra, inter) pairs worth trying: TF's default, all cores in one op, ops side by side, one core."""
    pairs: list[Threads] = [(None, None), (cpus, 1), (cpus, 2), (1, 1), (1, 2)]
    if cpus >= 4:
        pairs += [(cpus // 2, 2), (max(1, cpus - 1), 1)]
    return list(dict.fromkeys(pairs))


def thread_fields(intra: int | None, inter: int | None) -> dict[str, Any]:
    return {"threads": intra, "inter_op_threads": inter}


def threads_label(pair: Threads) -> str:
    return "default threads" if pair == (None, None) else f"threads {pair[0]}/{pair[1]}"


@dataclass
class Run:
    """What the phases of one doctor run share: the settings, the loaded export, the sample, the findings.

    Fields without a default are set by the phase that measures them (in the order `measure()` runs them).
    """

    export: str | os.PathLike[str]
    output_format: str
    batch_size: int
    budget: Budget
    say: Callable[[str], None]
    files: list[InputFile]
    columns: dict[str, Any]  # allow_missing and assembled, as every Predictor.load and reader takes them
    predictor: Predictor
    schema: dict[str, Any]  # the columns read: assembled inputs' sources
    fmt_in: str
    cpus: int
    skipped: list[str] = field(default_factory=list)
    model_cost: float = 0.0  # seconds per row of one model call on the first rows
    sample: Sample = field(init=False)
    stages: dict[str, Stage] = field(init=False)
    feeds: list[Feeds] = field(init=False)  # the sample's chunks converted (the conversion stage)
    outputs: list[dict[str, np.ndarray]] = field(init=False)  # model outputs of some of them
    tmp: Path = field(init=False)
    table: pa.Table = field(init=False)  # the sample, truncated to one pipelined pass
    sample_file: Path = field(init=False)
    e2e_rows: int = 0
    e2e_seconds: float = 0.0
    e2e_min: float = 0.0  # a pipelined pass is repeated until this long
    e2e_pass: float = 0.0
    m: Measurements = field(init=False)
    best_batch: int = 0
    best_rate: float = 0.0
    best_feeds: list[Feeds] = field(init=False)
    best_pair: Threads = (None, None)
    best_pair_rate: float = 0.0
    done: dict[tuple[int, Threads], float] = field(default_factory=dict)  # pipelined runs' best rates
    loaded: dict[Threads, Predictor] = field(default_factory=dict)

    def load(self, intra: int | None = None, inter: int | None = None, xla: bool = False) -> Predictor:
        """The export loaded again at other session settings (same signature, same column options)."""
        from ..predictor import Predictor

        return Predictor.load(
            self.export,
            self.predictor.signature,
            intra_op_threads=intra,
            inter_op_threads=inter,
            xla=xla,
            tags=self.predictor.tags,
            allow_missing=self.columns.get("allow_missing", ()),
            assemble=self.columns.get("assembled"),
        )

    def warm(self, rows: int, seconds: float) -> bool:
        """Warm up a new batch size only when one call is cheap next to its time slice."""
        return rows * self.model_cost < seconds / 4
