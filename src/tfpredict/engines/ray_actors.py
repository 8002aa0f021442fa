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

from ..errors import InputError
from ..features import source_schema
from ..io.types import typed_features, where
from ..io.writers import output_type, outputs_to_batch
from ..predictor import DEFAULT_BATCH_SIZE, Predictor
from .common import cast_keep, first_bad_row, lists_as_json_text, output_schema, without_row_prefix
from .ray_export import ExportPackage

#: Ray's `include_paths` column: lets an actor name the file of a bad row.
PATH_COLUMN = "path"


@dataclass(frozen=True)
class PredictSettings:
    """What every actor needs to know besides the export."""

    signature: str | None = None
    outputs: tuple[str, ...] | None = None
    keep: tuple[str, ...] = ()
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None
    inter_op_threads: int | None = None
    xla: bool = False
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
        self.keep = list(settings.keep)
        self.predictor: Predictor = Predictor.load(
            export.materialize(),
            settings.signature,
            intra_op_threads=settings.threads,
            inter_op_threads=settings.inter_op_threads,
            xla=settings.xla,
            batch_size=settings.batch_size,
        )
        self.signature = self.predictor.signature
        self.assembled = {k: list(v) for k, v in settings.assembled}
        self.schema = source_schema(self.predictor.inputs_for(self.signature), self.assembled)
        outputs = self.predictor.signatures[self.signature].outputs
        self.selected = list(settings.outputs) if settings.outputs else list(outputs)
        self.declared = {k: output_type(t.dtype, t.shape) for k, t in outputs.items()}
        self.keep_types = dict(settings.keep_types)
        self.use_paths = PATH_COLUMN not in self.schema and PATH_COLUMN not in self.keep
        context = ray.get_runtime_context()
        self.node = context.get_node_id()
        self.actor = context.get_actor_id() or f"pid{os.getpid()}"
        self.stats = stats
        self.load_seconds = time.perf_counter() - started

    def __call__(self, table: pa.Table) -> Iterator[pa.Table]:
        """One Ray block in, its predictions out, in model calls of `batch_size` rows."""
        batch = _one_batch(table)
        for start in range(0, max(batch.num_rows, 1), self.settings.batch_size):
            yield self._predict(batch.slice(start, self.settings.batch_size))

    def _predict(self, batch: pa.RecordBatch) -> pa.Table:
        started = time.perf_counter()
        paths = batch.column(PATH_COLUMN) if self.use_paths and PATH_COLUMN in batch.schema.names else None
        features = typed_features(batch, self.schema, paths)
        try:
            feeds = self._convert(features)
        except InputError as exc:
            raise self._locate(features, paths, exc) from None
        outputs = self.predictor.predict_feeds(feeds, outputs=self.selected)
        kept = cast_keep(batch.select(self.keep), self.keep_types)
        schema = output_schema(self.selected, self.declared, outputs, kept, self.keep)
        result = outputs_to_batch(outputs, schema, kept)
        if self.settings.text_lists:
            result = lists_as_json_text(result)
        if self.stats is not None:
            import ray

            ray.get(
                self.stats.add.remote(
                    self.actor, self.node, batch.num_rows, time.perf_counter() - started, self.load_seconds
                )
            )
        return pa.Table.from_batches([result])

    def _convert(self, features: pa.RecordBatch) -> Any:
        return self.predictor.convert(
            features,
            signature=self.signature,
            allow_missing=self.settings.allow_missing,
            assemble=self.assembled,
        )

    def _locate(self, features: pa.RecordBatch, paths: pa.Array | None, first: InputError) -> InputError:
        """Bisect a batch whose conversion failed down to its first bad row, and name that row's file."""
        i, message = first_bad_row(self._convert, features)
        return InputError(where(paths, i) + (message or without_row_prefix(first.message)))


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
