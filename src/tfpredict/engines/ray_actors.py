"""The predictor actors of a Ray job: each loads the export once, then turns Ray blocks (Arrow tables of
the input columns, typed as Ray's readers guessed) into the output columns, as the local engine writes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..io.types import typed_features, where
from .common import LoadOptions, batch_model, lists_as_json_text, load_predictor
from .ray_export import ExportPackage

#: Ray's `include_paths` column: lets an actor name the file of a bad row.
PATH_COLUMN = "path"


@dataclass(frozen=True)
class PredictSettings:
    """What every actor needs to know besides the export."""

    load: LoadOptions = LoadOptions()  # signature, TensorFlow threads, XLA, rows per model call
    outputs: tuple[str, ...] | None = None
    keep: tuple[str, ...] = ()
    text_lists: bool = (
        False  # CSV output: list columns as JSON text ("[0.1, 0.9]"), as the local engine writes
    )
    # --keep column types for every output file (the first input file's, as in the local engine's output);
    # a column not listed keeps the type it was read with.
    keep_types: tuple[tuple[str, pa.DataType], ...] = ()
    # Columns the input may lack (True: any), and assembled inputs with their source columns (resolved).
    allow_missing: bool | tuple[str, ...] = ()
    assembled: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass
class ActorStats:
    """What one predictor actor did: rows, seconds spent in __call__ (read to written batch), load time."""

    actor: str
    node: str
    rows: int = 0
    batches: int = 0
    busy_seconds: float = 0.0
    load_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.busy_seconds if self.busy_seconds > 0 else 0.0


class StatsCollector:
    """A zero-CPU Ray actor the predictor actors report to after each batch (a side channel, so the output
    holds only the predictions)."""

    def __init__(self) -> None:
        self.actors: dict[str, ActorStats] = {}

    def add(self, actor: str, node: str, rows: int, seconds: float, load_seconds: float) -> None:
        s = self.actors.setdefault(actor, ActorStats(actor, node, load_seconds=load_seconds))
        s.rows += rows
        s.batches += 1
        s.busy_seconds += seconds

    def summary(self) -> list[ActorStats]:
        return list(self.actors.values())


class PredictBatches:
    """The callable class Ray Data runs on its actor pool: loads the export once, then predicts each batch
    (an Arrow table) into the output columns."""

    def __init__(self, export: ExportPackage, settings: PredictSettings, stats: Any = None) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        started = time.perf_counter()
        import ray

        self.settings = settings
        # engines/common.py: the same as a Spark worker's
        self.model = batch_model(load_predictor(export.materialize(), settings.load), settings)
        self.use_paths = PATH_COLUMN not in self.model.inputs and PATH_COLUMN not in settings.keep
        context = ray.get_runtime_context()
        self.node = context.get_node_id()
        self.actor = context.get_actor_id() or f"pid{os.getpid()}"
        self.stats = stats
        self.load_seconds = time.perf_counter() - started

    def __call__(self, table: pa.Table) -> Iterator[pa.Table]:
        """One Ray block in, its predictions out, in model calls of `batch_size` rows."""
        batch = _one_batch(table)
        size = self.settings.load.batch_size
        for start in range(0, max(batch.num_rows, 1), size):
            yield self._predict(batch.slice(start, size))

    def _predict(self, batch: pa.RecordBatch) -> pa.Table:
        started = time.perf_counter()
        paths = batch.column(PATH_COLUMN) if self.use_paths and PATH_COLUMN in batch.schema.names else None
        features = typed_features(batch, self.model.inputs, paths)
        outputs = self.model.predict(features, lambda i: where(paths, i))
        result = self.model.output_batch(outputs, batch)
        if self.stats is not None:
            import ray

            ray.get(
                self.stats.add.remote(
                    self.actor, self.node, batch.num_rows, time.perf_counter() - started, self.load_seconds
                )
            )
        return pa.Table.from_batches([result])


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if len(batches) == 1:
        return batches[0]
    return pa.RecordBatch.from_pylist([], schema=table.schema) if not batches else pa.concat_batches(batches)


__all__ = [
    "PATH_COLUMN",
    "ActorStats",
    "PredictBatches",
    "PredictSettings",
    "StatsCollector",
    "lists_as_json_text",
]
