"""What runs in Spark's Python workers: Arrow batches in (mapInArrow), the local engine's output columns out.

Columns arrive as Spark read them: CSV and JSON Lines as text (typed here with the local engine's casts, so a
bad cell names its file, column and value), Parquet and users' DataFrames in Spark's types (cast to the
model's), TFRecord files as their bytes (read here by the local engine's TFRecord reader). Each worker keeps
its Predictor across tasks (spark_export.cached_predictor) and reports what it did to an accumulator.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..features import FeatureSpec, source_schema
from ..io.files import detect_format
from ..io.tfrecord import read_tfrecord
from ..io.types import as_model_type, cast_text, is_scalar, is_text, type_words, value_type
from ..io.writers import outputs_to_batch
from ..predictor import Predictor
from .common import cast_keep, first_bad_row, lists_as_json_text, without_row_prefix
from .spark_export import ExportRef, LoadOptions, cached_predictor

#: How the rows of one DataFrame reach the workers.
COLUMNS, TFRECORD_FILES = "columns", "tfrecord-files"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs besides the rows (pickled into the mapInArrow function)."""

    export: ExportRef
    load: LoadOptions
    schema: pa.Schema  # the output: --keep columns, then the outputs (before CSV's lists-as-text)
    outputs: tuple[str, ...]
    keep: tuple[str, ...] = ()
    keep_types: tuple[tuple[str, pa.DataType], ...] = ()
    allow_missing: bool | tuple[str, ...] = ()
    assembled: tuple[tuple[str, tuple[str, ...]], ...] = ()
    text_lists: bool = False  # CSV output: list columns as JSON text
    source: str = COLUMNS
    path: str | None = None  # the input file of these rows, to name it in a message
    tfrecord_serialized: bool = True


# --------------------------------------------------------------------------------------- statistics


@dataclass
class WorkerStats:
    """What one Python worker did in a job: rows, seconds predicting, export loads."""

    executor: str  # host and executor (the executor's SparkFiles directory)
    where: str  # host:working directory of the executor (its work dir on a standalone worker)
    pid: int
    rows: int = 0
    batches: int = 0
    busy_seconds: float = 0.0  # converting and predicting (input and output handed over by Spark not counted)
    handoff_seconds: float = 0.0  # in Spark, taking our output batches (serialising them to the JVM)
    loads: int = 0
    load_seconds: float = 0.0

    def add(self, other: WorkerStats) -> None:
        self.rows += other.rows
        self.batches += other.batches
        self.busy_seconds += other.busy_seconds
        self.handoff_seconds += other.handoff_seconds
        self.loads += other.loads
        self.load_seconds += other.load_seconds

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.busy_seconds if self.busy_seconds > 0 else 0.0


class StatsParam:
    """How Spark merges the workers' {(executor, pid): WorkerStats} (an AccumulatorParam)."""

    def zero(self, value: Any) -> dict[tuple[str, int], WorkerStats]:
        return {}

    def addInPlace(self, a: dict, b: dict) -> dict:  # noqa: N802 - Spark's name
        for key, s in b.items():
            if key in a:
                a[key].add(s)
            else:
                a[key] = WorkerStats(s.executor, s.where, s.pid)
                a[key].add(s)
        return a


def stats_accumulator(spark: Any) -> Any:
    """An accumulator the workers add their WorkerStats to (read its .value on the driver after the job)."""
    return spark.sparkContext.accumulator({}, StatsParam())


def _this_worker() -> WorkerStats:
    from pyspark import SparkFiles

    host = socket.gethostname()
    # An executor's files directory (its working directory on a cluster: SparkFiles gives "." there).
    root = hashlib.sha1(os.path.abspath(SparkFiles.getRootDirectory()).encode()).hexdigest()[:8]
    return WorkerStats(f"{host}/{root}", f"{host}:{os.getcwd()}", os.getpid())


# ----------------------------------------------------------------------------------------- predicting


def predict_partition(
    batches: Iterator[pa.RecordBatch], settings: WorkerSettings, stats: Any = None
) -> Iterator[pa.RecordBatch]:
    """The mapInArrow function: the output batches of a partition's input batches."""
    loaded, fresh = cached_predictor(settings.export, settings.load)
    model = _Model(loaded.predictor, settings)
    me = _this_worker()
    if fresh:
        me.loads, me.load_seconds = 1, loaded.load_seconds
    try:
        for batch in batches:
            outputs = model.predict(batch)
            while True:
                started = time.perf_counter()
                out = next(outputs, None)
                me.busy_seconds += time.perf_counter() - started  # converting and predicting
                if out is None:
                    break
                me.rows += out.num_rows
                started = time.perf_counter()
                yield out
                me.handoff_seconds += time.perf_counter() - started  # Spark taking the output
            me.batches += 1
    finally:
        if stats is not None:
            stats.add({(me.executor, me.pid): me})


def predict_structs(arrays: Iterator[pa.Array], settings: WorkerSettings) -> Iterator[pa.Array]:
    """The UDF form: a struct column of the inputs in, a struct column of the outputs out, row for row."""
    loaded, _ = cached_predictor(settings.export, settings.load)
    model = _Model(loaded.predictor, settings)
    struct = pa.struct(list(settings.schema))
    for array in arrays:
        outs = list(model.predict(pa.RecordBatch.from_struct_array(array)))
        if not outs:
            yield pa.array([], struct)
            continue
        table = pa.Table.from_batches(outs).combine_chunks()
        yield pa.StructArray.from_arrays([c.chunk(0) for c in table.columns], fields=list(table.schema))


class _Model:
    """One job's use of a worker's Predictor: input columns -> feeds -> outputs -> the output batch."""

    def __init__(self, predictor: Predictor, settings: WorkerSettings) -> None:
        self.predictor = predictor
        self.settings = settings
        self.signature = settings.load.signature or predictor.signature
        self.assembled = {k: list(v) for k, v in settings.assembled}
        self.schema = source_schema(predictor.inputs_for(self.signature), self.assembled)
        self.keep = list(settings.keep)
        self.keep_types = dict(settings.keep_types)
        self.serialized_input = predictor.serialized_input_for(self.signature)
        self.prefix = f"{settings.path}: " if settings.path else ""

    def predict(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        size = self.settings.load.batch_size
        if self.settings.source == TFRECORD_FILES:
            for i in range(batch.num_rows):
                yield from self._tfrecord_file(batch.column("path")[i].as_py(), batch.column("content")[i])
            return
        for start in range(0, batch.num_rows, size):
            part = batch.slice(start, size)
            features = typed_columns(part, self.schema, self.prefix)
            try:
                feeds = self._convert(features)
            except InputError as exc:
                _, message = first_bad_row(self._convert, features)
                raise InputError(self.prefix + (message or without_row_prefix(exc.message))) from None
            yield self._output(self.predictor.predict_feeds(feeds, outputs=list(self.settings.outputs)), part)

    def _convert(self, features: pa.RecordBatch) -> Any:
        return self.predictor.convert(
            features,
            signature=self.signature,
            allow_missing=self.settings.allow_missing,
            assemble=self.assembled,
        )

    def _output(self, outputs: dict[str, np.ndarray], batch: pa.RecordBatch) -> pa.RecordBatch:
        kept = cast_keep(batch.select(self.keep), self.keep_types) if self.keep else None
        result = outputs_to_batch(outputs, self.settings.schema, kept)
        return lists_as_json_text(result) if self.settings.text_lists else result

    def _tfrecord_file(self, uri: str, content: Any) -> Iterator[pa.RecordBatch]:
        """A whole TFRecord file's bytes, read by the local engine's reader from a local copy."""
        name = self.settings.path or uri
        suffix = "".join(Path(name).suffixes[-2:]) or ".tfrecord"
        with tempfile.TemporaryDirectory(prefix="tfpredict-") as tmp:
            local = Path(tmp) / f"input{suffix}"
            local.write_bytes(content.as_buffer() if hasattr(content, "as_buffer") else content.as_py())
            chunks = read_tfrecord(
                detect_format(local),
                self.schema,
                self.settings.load.batch_size,
                self.keep,
                serialized=self.settings.tfrecord_serialized,
            )
            try:
                for chunk in chunks:
                    if chunk.serialized is not None and self.serialized_input is not None:
                        outputs = self.predictor.run(
                            {self.serialized_input: chunk.serialized},
                            signature=self.signature,
                            outputs=list(self.settings.outputs),
                        )
                    else:
                        features = typed_columns(chunk.batch, self.schema, f"{name}: ")
                        feeds = self._convert(features)
                        outputs = self.predictor.predict_feeds(feeds, outputs=list(self.settings.outputs))
                    yield self._output(outputs, chunk.batch)
            except InputError as exc:
                raise InputError(exc.message.replace(str(local), name)) from None


def typed_columns(batch: pa.RecordBatch, schema: dict[str, FeatureSpec], prefix: str = "") -> pa.RecordBatch:
    """The model's feature columns of a batch in the model's types: text as the local engine's CSV reader
    casts it ("180.0" is the integer 180, " 3.5 " the number 3.5), other types as the Ray engine casts them.
    prefix: "file: " for the messages."""
    names, columns = [], []
    for name in batch.schema.names:
        spec = schema.get(name)
        if spec is None:
            continue
        col = batch.column(name)
        if is_text(col.type) and is_scalar(spec) and spec.dtype != "string":
            target = value_type(spec)
            typed, bad = cast_text(col, target)
            if bad.any():
                value = col[int(np.argmax(bad))].as_py()
                raise InputError(f"{prefix}column '{name}': expected {type_words(target)}, found {value!r}")
            col = typed
        else:
            try:
                col = as_model_type(col, spec)
            except InputError as exc:
                raise InputError(prefix + exc.message) from None
        names.append(name)
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, names=names)


__all__ = [
    "COLUMNS",
    "TFRECORD_FILES",
    "WorkerSettings",
    "WorkerStats",
    "predict_partition",
    "predict_structs",
    "stats_accumulator",
    "typed_columns",
]
