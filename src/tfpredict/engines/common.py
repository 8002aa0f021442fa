"""What every engine shares, so the local engine (`pipeline.py`), Ray's and Spark's agree: which outputs and
--keep columns a job may ask for, the output table's schema, the first bad row of a batch that fails, and
(for the cluster engines) the driver's checks of the input files, --keep types and CSV's list columns, and
what a Ray actor and a Spark Python worker both do with their model: load it (LoadOptions), then predict
Arrow batches into output batches (BatchModel)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError, OutputError, UsageError
from ..features import AllowMissing, FeatureSpec, source_schema
from ..io.files import InputFile
from ..io.readers import input_columns, read_inputs
from ..io.types import check_columns, first_failing_row, is_list, list_depth
from ..io.writers import column_from_numpy, json_text, output_format, output_type, outputs_to_batch
from ..predictor import DEFAULT_BATCH_SIZE, Feeds, Predictor

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


def check_output_directory(path: str | os.PathLike[str], engine: str) -> tuple[Path, str]:
    """A cluster engine's output directory (which must not exist yet, or be empty) and its format (from its
    extension: .parquet, .csv, .jsonl; Parquet without one)."""
    out = Path(path)
    fmt, compression = output_format(out)
    if compression:
        raise OutputError(
            f"{out}: compressed output is not supported with --engine {engine} (use .parquet, .csv or .jsonl)"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{out}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: output directory {parent} is not writable")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(
            f"{out}: already exists; --engine {engine} writes a new directory of files (remove it or choose "
            "another name)"
        )
    return out, fmt


def check_inputs(
    files: Sequence[InputFile],
    schema: dict[str, FeatureSpec],
    keep: Sequence[str],
    tfrecord_serialized: bool,
    first_files: int,
    allow_missing: AllowMissing = (),
    assembled: dict[str, list[str]] | None = None,
) -> dict[str, pa.DataType]:
    """The local engine's checks on the first rows of the first `first_files` files (missing columns,
    unreadable headers) and on the columns of every other CSV and Parquet file (their headers: cheap), so a
    wrong file fails before a cluster starts, with the local engine's message (a cluster's CSV reader would
    fill a missing column with nulls). Returns the --keep column types of the first file (the local
    engine's output has those)."""
    for f in files[first_files:]:
        if f.format in ("csv", "parquet"):
            check_columns(f, input_columns(f), schema, keep, allow_missing, assembled)
    keep_types: dict[str, pa.DataType] = {}
    for f in files[:first_files]:
        for chunk in read_inputs(
            [f],
            schema,
            1,
            keep,
            tfrecord_serialized=tfrecord_serialized,
            allow_missing=allow_missing,
            assembled=assembled,
        ):
            if not keep_types and keep:
                types = {k: chunk.batch.column(k).type for k in keep}
                keep_types = {k: pa.string() if pa.types.is_null(t) else t for k, t in types.items()}
            break
    return keep_types


def cast_keep(kept: pa.RecordBatch, types: dict[str, pa.DataType]) -> pa.RecordBatch:
    """--keep columns in one type across files and formats (a CSV id is text, a Parquet one an integer)."""
    if not types or all(types.get(f.name, f.type) == f.type for f in kept.schema):
        return kept
    columns = []
    for f, col in zip(kept.schema, kept.columns, strict=True):
        target = types.get(f.name, f.type)
        try:
            columns.append(col if col.type == target else pc.cast(col, target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(
                f"--keep column '{f.name}': {col.type} values that do not convert to {target}, "
                "its type in the first input file"
            ) from None
    return pa.RecordBatch.from_arrays(columns, names=kept.schema.names)


def lists_as_json_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """List columns as JSON text, which CSV can hold (the local engine's CSV writer does the same)."""
    columns, fields = [], []
    for f, col in zip(batch.schema, batch.columns, strict=True):
        if is_list(f.type):
            col, f = json_text(col), pa.field(f.name, pa.string())
        columns.append(col)
        fields.append(f)
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def text_lists_schema(schema: pa.Schema) -> pa.Schema:
    """The schema `lists_as_json_text` gives batches of `schema` (CSV output: list columns as text)."""
    return pa.schema([pa.field(f.name, pa.string()) if is_list(f.type) else f for f in schema])


# ---------------------------------------------------------------------- a cluster worker's model

#: TensorFlow's inter-op setting that runs every op in the thread that calls the model (a negative
#: ConfigProto.inter_op_parallelism_threads). A worker that holds one core then never waits for TensorFlow's
#: pool thread to be woken and scheduled, which on a core shared with Spark's JVM took 2-3x the model's own
#: CPU time per call (and the pool's spinning burns CPU too).
CALLER_THREAD = -1


@dataclass(frozen=True)
class LoadOptions:
    """How a cluster worker loads the export (a Spark worker's cache key: another setting, another Predictor).
    threads: TensorFlow's intra-op threads; inter_op_threads: its inter-op pool (CALLER_THREAD: none)."""

    signature: str | None = None
    threads: int | None = None
    inter_op_threads: int | None = None
    xla: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE


def load_predictor(export_dir: str | os.PathLike[str], options: LoadOptions) -> Predictor:
    """The Predictor of a worker (a Ray actor, a Spark Python worker) for the export on its node."""
    return Predictor.load(
        export_dir,
        options.signature,
        intra_op_threads=options.threads,
        inter_op_threads=options.inter_op_threads,
        xla=options.xla,
        batch_size=options.batch_size,
    )


class JobSettings(Protocol):
    """What a Ray actor's and a Spark worker's settings both say about one job's use of the Predictor."""

    @property
    def load(self) -> LoadOptions: ...
    @property
    def outputs(self) -> tuple[str, ...] | None: ...
    @property
    def keep(self) -> tuple[str, ...]: ...
    @property
    def keep_types(self) -> tuple[tuple[str, pa.DataType], ...]: ...
    @property
    def allow_missing(self) -> bool | tuple[str, ...]: ...
    @property
    def assembled(self) -> tuple[tuple[str, tuple[str, ...]], ...]: ...
    @property
    def text_lists(self) -> bool: ...


def batch_model(predictor: Predictor, settings: JobSettings, schema: pa.Schema | None = None) -> BatchModel:
    """The BatchModel of one job's settings (a Ray actor's PredictSettings, a Spark WorkerSettings)."""
    return BatchModel(
        predictor,
        settings.load.signature,
        settings.outputs,
        keep=settings.keep,
        keep_types=dict(settings.keep_types),
        allow_missing=settings.allow_missing,
        assembled={k: list(v) for k, v in settings.assembled},
        text_lists=settings.text_lists,
        schema=schema,
    )


class BatchModel:
    """A worker's Predictor as one job uses it: an Arrow batch of feature columns (already in the model's
    types) -> feeds -> the selected outputs -> the output batch (--keep columns, then the outputs)."""

    def __init__(
        self,
        predictor: Predictor,
        signature: str | None = None,
        outputs: Sequence[str] | None = None,
        *,
        keep: Sequence[str] = (),
        keep_types: dict[str, pa.DataType] | None = None,
        allow_missing: AllowMissing = (),
        assembled: dict[str, list[str]] | None = None,
        text_lists: bool = False,
        schema: pa.Schema | None = None,
    ) -> None:
        """schema: the output schema when the driver knows it; None: the first batch's (output_schema)."""
        self.predictor = predictor
        self.signature = signature or predictor.signature
        declared = predictor.signatures[self.signature].outputs
        self.selected = list(outputs) if outputs else list(declared)
        self.declared = {k: output_type(t.dtype, t.shape) for k, t in declared.items()}
        self.assembled = dict(assembled or {})
        self.inputs = source_schema(predictor.inputs_for(self.signature), self.assembled)  # columns it reads
        self.keep = list(keep)
        self.keep_types = dict(keep_types or {})
        self.allow_missing = allow_missing
        self.text_lists = text_lists  # CSV output: list columns as JSON text
        self.schema = schema

    def convert(self, features: pa.RecordBatch) -> Feeds:
        return self.predictor.convert(
            features, signature=self.signature, allow_missing=self.allow_missing, assemble=self.assembled
        )

    def predict(
        self, features: pa.RecordBatch, name_row: Callable[[int], str] = lambda i: ""
    ) -> dict[str, Any]:
        """The selected outputs of a batch. A row that does not convert is an InputError naming it:
        name_row(i) ("file: ") then the converter's message without its "Row i: "."""
        try:
            feeds = self.convert(features)
        except InputError as exc:
            i, message = first_bad_row(self.convert, features)
            raise InputError(name_row(i) + (message or without_row_prefix(exc.message))) from None
        return self.predictor.predict_feeds(feeds, outputs=self.selected)

    def output_batch(self, outputs: dict[str, np.ndarray], rows: pa.RecordBatch) -> pa.RecordBatch:
        """The output batch of `rows` (whose --keep columns it copies) and their outputs."""
        kept = cast_keep(rows.select(self.keep), self.keep_types) if self.keep else None
        schema = self.schema or output_schema(self.selected, self.declared, outputs, kept, self.keep)
        result = outputs_to_batch(outputs, schema, kept)
        return lists_as_json_text(result) if self.text_lists else result


__all__ = [
    "CALLER_THREAD",
    "BatchModel",
    "LoadOptions",
    "cast_keep",
    "check_inputs",
    "check_keep",
    "check_output_directory",
    "first_bad_row",
    "lists_as_json_text",
    "load_predictor",
    "output_schema",
    "selected_outputs",
    "text_lists_schema",
    "without_row_prefix",
]
