"""`tfpredict doctor`: where prediction time goes (input, model, output), measured on the user's own data,
and what to change, with the expected gain of each change.

    from tfpredict import doctor
    d = doctor("export/", "data.csv", seconds=30)
    d.bottleneck            # "input", "model" or "output"
    d.to_dict()             # the object `tfpredict doctor --json` prints

This module imports only the standard library (measure.py and advise.py, which import TensorFlow, load
when doctor() runs): `tfpredict/__init__.py` imports it at once, so that `tfpredict.doctor` is the plain
function below however this package was first imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .advise import Recommendation, Settings
    from .measure import Measurements


@dataclass
class Diagnosis:
    """What doctor found: the bottleneck with its evidence, every measurement, and the recommendations."""

    bottleneck: str
    evidence: str
    recommended: Settings
    recommendations: list[Recommendation]
    measurements: Measurements

    @property
    def stages(self) -> dict[str, Any]:
        """Each stage's dict, plus `of_end_to_end`: its time alone over the pipelined job's time."""
        stages = {k: s.to_dict() for k, s in self.measurements.stages.items()}
        whole = stages.get("end_to_end", {}).get("rows_per_s")
        for stage in stages.values():
            rate = stage["rows_per_s"]
            stage["of_end_to_end"] = round(whole / rate, 4) if whole and rate else None
        return stages

    @property
    def sweeps(self) -> dict[str, Any]:
        m = self.measurements
        return {
            "batch_size": [p.to_dict() for p in m.batch_sweep],
            "threads": [p.to_dict() for p in m.thread_sweep],
            "xla": [p.to_dict() for p in m.xla_sweep],
            "input_format": [p.to_dict() for p in m.format_sweep],
            "end_to_end": [p.to_dict() for p in m.end_to_end_sweep],
            "per_row": m.per_row.to_dict() if m.per_row else None,
        }

    @property
    def top_ops(self) -> list[dict[str, Any]]:
        return [op.to_dict() for op in self.measurements.top_ops]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `tfpredict doctor --json` (plain types only)."""
        m = self.measurements
        return {
            "export": m.export,
            "data": m.data,
            "signature": m.signature,
            "path": m.model_path,
            "input_format": m.input_format,
            "output_format": m.output_format,
            "cpus": m.cpus,
            "sample_rows": m.sample_rows,
            "whole_input_read": m.file_exhausted,
            "budget_seconds": m.budget,
            "seconds": round(m.seconds, 2),
            "bottleneck": self.bottleneck,
            "evidence": self.evidence,
            "stages": self.stages,
            "sweeps": self.sweeps,
            "top_ops": self.top_ops,
            "op_categories": {k: round(v, 4) for k, v in m.op_categories.items()},
            "recommended": self.recommended.to_dict(),
            "recommendations": [r.to_dict() for r in self.recommendations],
            "skipped": list(m.skipped),
        }


def doctor(
    export: str | os.PathLike[str],
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    rows: int | None = None,
    seconds: float | None = None,
    signature: str | None = None,
    tags: list[str] | None = None,
    output_format: str = "parquet",
    progress: Callable[[str], None] | None = None,
    allow_missing: bool | Collection[str] = (),
    assemble: Mapping[str, str | Sequence[str]] | None = None,
) -> Diagnosis:
    """Measure where prediction time goes for `export` on a sample of `data` (files, globs or directories
    as `tfpredict predict` takes them), within about `seconds`, and say what to change.

    rows: at most this many rows in the sample (default: as many as fit the budget, never more than the
    input). output_format: what the job would write ("parquet", "csv", "jsonl"). allow_missing, assemble:
    the input columns as `tfpredict predict` takes them (--allow-missing, --assemble).
    seconds: None is the default budget (60 s). tags: the meta graph's tag set (default: the serving one).
    """
    from .advise import recommendations, recommended_settings, verdict
    from .measure import DEFAULT_SECONDS, measure

    m = measure(
        export,
        data,
        rows=rows,
        seconds=DEFAULT_SECONDS if seconds is None else seconds,
        signature=signature,
        tags=tags,
        output_format=output_format,
        progress=progress,
        allow_missing=allow_missing,
        assemble=assemble,
    )
    v = verdict(m)
    chosen = recommended_settings(m, v.bottleneck)
    return Diagnosis(v.bottleneck, v.evidence, chosen, recommendations(m, v, chosen), m)


def __getattr__(name: str) -> Any:
    """Recommendation and Settings, re-exported when first used (advise.py imports the measuring code)."""
    if name in ("Recommendation", "Settings"):
        from . import advise

        return getattr(advise, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Diagnosis", "Recommendation", "Settings", "doctor"]
