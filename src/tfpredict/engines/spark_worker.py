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
from ..features import FeatureSpec
from ..io.files import detect_format
from ..io.tfrecord import read_tfrecord
from ..io.types import as_model_type, cast_text, is_scalar, is_text, type_words, value_type
from .common import BatchModel, LoadOptions, batch_model
from .spark_export import ExportRef, cached_predictor

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
    # Of busy_seconds: the first model call after each load (TensorFlow builds and optimises its step then).
    first_call_seconds: float = 0.0

    def add(self, other: WorkerStats) -> None:
        self.rows += other.rows
        self.batches += other.batches
        self.busy_seconds += other.busy_seconds
        self.handoff_seconds += other.handoff_seconds
        self.loads += other.loads
        self.load_seconds += other.load_seconds
        self.first_call_seconds += other.first_call_seconds

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
    model = batch_model(loaded.predictor, settings, settings.schema)  # the same as a Ray actor's
    me = _this_worker()
    if fresh:
        me.loads, me.load_seconds = 1, loaded.load_seconds
    try:
        for batch in batches:
            outputs = _predictions(model, batch, settings)
            while True:
                started = time.perf_counter()
                out = next(outputs, None)
                seconds = time.perf_counter() - started
                me.busy_seconds += seconds  # converting and predicting
                if fresh and out is not None and not me.rows:
                    me.first_call_seconds = seconds
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
    model = batch_model(loaded.predictor, settings, settings.schema)  # the same as a Ray actor's
    struct = pa.struct(list(settings.schema))
    for array in arrays:
        outs = list(_predictions(model, pa.RecordBatch.from_struct_array(array), settings))
        if not outs:
            yield pa.array([], struct)
            continue
        table = pa.Table.from_batches(outs).combine_chunks()
        yield pa.StructArray.from_arrays([c.chunk(0) for c in table.columns], fields=list(table.schema))


def _predictions(
    model: BatchModel, batch: pa.RecordBatch, settings: WorkerSettings
) -> Iterator[pa.RecordBatch]:
    """The output batches of one input batch, in model calls of batch_size rows."""
    if settings.source == TFRECORD_FILES:
        for i in range(batch.num_rows):
            yield from _tfrecord_file(
                model, settings, batch.column("path")[i].as_py(), batch.column("content")[i]
            )
        return
    prefix = f"{settings.path}: " if settings.path else ""
    size = settings.load.batch_size
    for start in range(0, batch.num_rows, size):
        part = batch.slice(start, size)
        features = typed_columns(part, model.inputs, prefix)
        yield model.output_batch(model.predict(features, lambda i: prefix), part)


def _tfrecord_file(
    model: BatchModel, settings: WorkerSettings, uri: str, content: Any
) -> Iterator[pa.RecordBatch]:
    """A whole TFRecord file's bytes, read by the local engine's reader from a local copy."""
    name = settings.path or uri
    suffix = "".join(Path(name).suffixes[-2:]) or ".tfrecord"
    serialized_input = model.predictor.serialized_input_for(model.signature)
    with tempfile.TemporaryDirectory(prefix="tfpredict-") as tmp:
        local = Path(tmp) / f"input{suffix}"
        local.write_bytes(content.as_buffer() if hasattr(content, "as_buffer") else content.as_py())
        chunks = read_tfrecord(
            detect_format(local),
            model.inputs,
            settings.load.batch_size,
            model.keep,
            serialized=settings.tfrecord_serialized,
        )
        try:
            for chunk in chunks:
                if chunk.serialized is not None and serialized_input is not None:
                    outputs = model.predictor.run(
                        {serialized_input: chunk.serialized},
                        signature=model.signature,
                        outputs=model.selected,
                    )
                else:  # as the local engine reads a TFRecord file: its message names the record
                    feeds = model.convert(typed_columns(chunk.batch, model.inputs, f"{name}: "))
                    outputs = model.predictor.predict_feeds(feeds, outputs=model.selected)
                yield model.output_batch(outputs, chunk.batch)
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
