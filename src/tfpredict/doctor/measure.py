"""Timings for `tfpredict doctor`: each stage alone on a sample of the user's data, the real pipelined job on
the same sample, and sweeps of the settings known to matter (batch size, threads, XLA, input format).

Every measurement is bounded by time, not by rows: a stage runs over the sample until its time slice is
spent (at least one call), so a slow model and a fast reader are both measured within one budget.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import InputError, TfpredictError
from ..features import AllowMissing, Assemble, resolve_assemble, source_schema
from ..io.readers import Chunk, InputFile, expand_inputs, input_columns, read_inputs
from ..io.writers import open_writer, output_format, output_type, outputs_to_batch

if TYPE_CHECKING:
    from ..predictor import Feeds, Predictor

log = logging.getLogger(__name__)

DEFAULT_SECONDS = 60.0
DEFAULT_BATCH_SIZE = 8192
BATCH_SIZES = (1, 32, 256, 1024, 4096, 8192, 16384, 65536, 262144)
MAX_PREPARED_BATCHES = 48  # distinct converted batches cycled through by one sweep point
#: Rows kept as the sample. Enough for stable rates at any batch size we sweep by default; a fast pipeline
#: runs its pipelined passes several times over it instead of reading more of the file.
MAX_SAMPLE_ROWS = 500_000
MAX_SAMPLE_BYTES = 256 << 20


# -------------------------------------------------------------------------------------------- value objects


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
            "rows_per_s": _finite(self.rows_per_s),
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
            "rows_per_s": _finite(self.rows_per_s),
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


def _finite(x: float | None) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), 1)


# ----------------------------------------------------------------------------------------------------- time


class Budget:
    """The wall-clock budget of one doctor run, handed out in slices of what is left after loading."""

    def __init__(self, seconds: float) -> None:
        self.total = float(seconds)
        self.start = time.perf_counter()
        self.usable = self.total  # rebased once the export is loaded

    def rebase(self) -> None:
        """Slices are fractions of the time left now (loading TensorFlow and the export is not ours)."""
        self.usable = max(self.left, 0.2 * self.total)

    @property
    def used(self) -> float:
        return time.perf_counter() - self.start

    @property
    def left(self) -> float:
        return self.total - self.used

    def slice(self, fraction: float, floor: float = 0.05) -> float:
        """A time slice of `fraction` of the usable budget, never more than what is left (but >= floor)."""
        return max(floor, min(fraction * self.usable, self.left))

    def allows(self, fraction: float) -> bool:
        """Is more than `fraction` of the usable budget left?"""
        return self.left > fraction * self.usable


def timed_rate(
    call: Callable[[Any], int], items: Sequence[Any], seconds: float, warmup: bool = True
) -> tuple[int, float]:
    """Call `call(item)` over `items` (cycling) until `seconds` have passed, at least once; (rows, seconds).

    warmup: one untimed call first (first use of a shape allocates; a session may optimize on first run).
    """
    if warmup:
        call(items[0])
    rows, start = 0, time.perf_counter()
    for item in itertools.cycle(items):
        rows += call(item)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return rows, elapsed
    raise AssertionError("unreachable")  # pragma: no cover


# ----------------------------------------------------------------------------------------------- the sample


@dataclass
class Sample:
    """The first rows of the user's data as the reader produced them, and how long reading them took."""

    files: list[InputFile]
    chunks: list[Chunk]
    rows: int  # rows kept as the sample
    read_rows: int  # rows read to time the reader (>= rows)
    read_seconds: float
    exhausted: bool  # the whole input was read
    first_rows: int = 0  # rows of the first chunk
    startup_seconds: float = 0.0  # the wait for the first chunk

    def steady_rate(self) -> tuple[int, float]:
        """(rows, seconds) of reading after the first chunk, when there was enough of it to time."""
        rows, seconds = self.read_rows - self.first_rows, self.read_seconds - self.startup_seconds
        if rows >= 4 * max(self.first_rows, 1) and seconds > 0.01:
            return rows, seconds
        return self.read_rows, self.read_seconds

    def table(self) -> pa.Table:
        return pa.Table.from_batches([c.batch for c in self.chunks if c.batch.num_rows])

    def truncate(self, rows: int) -> None:
        """Keep only the chunks holding the first `rows` rows (whole chunks)."""
        kept, chunks = 0, []
        for c in self.chunks:
            if kept >= rows:
                break
            chunks.append(c)
            kept += c.num_rows
        self.chunks, self.rows = chunks, kept


def read_sample(
    files: list[InputFile],
    schema: dict[str, Any],
    batch_size: int,
    keep_rows: int,
    min_seconds: float,
    max_seconds: float,
    timing_rows: int = 500_000,
    columns: dict[str, Any] | None = None,
) -> Sample:
    """Read with the real job's reader: keep the first `keep_rows` rows as the sample, and go on reading
    (without keeping) until `min_seconds` of steady reading or `timing_rows` rows were timed.

    The wait for the first chunk (opening the file, starting the reader's threads, the first block) is
    timed apart as `startup_seconds`: a job pays it once per file, so it must not set the rate of a large
    file. A large file is never read whole just to time it.
    """
    chunks: list[Chunk] = []
    kept, rows, seconds = 0, 0, 0.0
    first_rows, first_seconds = 0, 0.0
    stream: Iterator[Chunk] = read_inputs(
        files, schema, batch_size, tfrecord_serialized=False, **(columns or {})
    )
    exhausted = False

    def more() -> bool:
        if seconds >= max_seconds:
            return False
        if kept < keep_rows:
            return True
        steady = seconds - first_seconds
        return steady < max(min_seconds, first_seconds) and rows < timing_rows

    try:
        while more():
            start = time.perf_counter()
            try:
                chunk = next(stream)
            except StopIteration:
                exhausted = True
                break
            finally:
                seconds += time.perf_counter() - start
            rows += chunk.num_rows
            if not first_rows:
                first_rows, first_seconds = chunk.num_rows, seconds
                # Keep at most ~256 MB of input columns in memory, whatever the row width.
                width = max(1, chunk.batch.nbytes // max(chunk.num_rows, 1))
                keep_rows = min(keep_rows, max(batch_size, MAX_SAMPLE_BYTES // width))
            if kept < keep_rows:
                if kept + chunk.num_rows > keep_rows:  # --rows is a promise: cut the last chunk
                    chunk = Chunk(chunk.batch.slice(0, keep_rows - kept), chunk.file, chunk.first_row)
                chunks.append(chunk)
                kept += chunk.num_rows
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return Sample(files, chunks, kept, rows, seconds, exhausted, first_rows, first_seconds)


def write_sample_file(sample: Sample, directory: Path, fmt: str) -> Path | None:
    """The sample as a file of format fmt, for the pipelined run and the format sweep (None if impossible).

    A CSV or JSON Lines input is copied line for line (so its extra columns and quoting cost what they cost
    in the user's file); other formats are written from the sample's columns.
    """
    first = sample.files[0]
    n = sample.rows
    if fmt == first.format and fmt in ("csv", "jsonl") and len(sample.files) == 1:
        suffix = first.path.name[first.path.name.index(".") :] if "." in first.path.name else f".{fmt}"
        out = directory / f"sample{suffix}"
        opener: Any = gzip.open if first.compression else open
        with opener(first.path, "rb") as src, opener(out, "wb") as dst:
            lines = n + (1 if fmt == "csv" else 0)
            for line in itertools.islice(src, lines):
                dst.write(line)
        return out
    if fmt == first.format == "tfrecord" and len(sample.files) == 1:
        import tensorflow as tf

        compression = "GZIP" if first.compression else ""
        out = directory / ("sample.tfrecord.gz" if first.compression else "sample.tfrecord")
        records = tf.data.TFRecordDataset(str(first.path), compression_type=compression).take(n)
        with tf.io.TFRecordWriter(str(out), options=compression or None) as w:
            for record in records:
                w.write(record.numpy())
        return out
    if fmt not in ("parquet", "csv", "jsonl"):
        return None
    out = directory / f"sample.{fmt}"
    try:
        batches = [c.batch for c in sample.chunks if c.batch.num_rows]
        writer = open_writer(out, batches[0].schema, fmt)  # the job's own writers: lists as JSON in text
        for batch in batches:
            writer.write(batch)
        writer.close()
    except (pa.ArrowException, TfpredictError, ValueError, TypeError, IndexError) as e:
        log.info("cannot write the sample as %s: %s", fmt, e)
        return None
    return out


def read_rate(
    path: Path, schema: dict[str, Any], batch_size: int, columns: dict[str, Any] | None = None
) -> tuple[int, float]:
    """Rows and seconds to read a whole (sample) file with the job's reader."""
    files = expand_inputs([path])
    start = time.perf_counter()
    chunks = read_inputs(files, schema, batch_size, tfrecord_serialized=False, **(columns or {}))
    rows = sum(c.num_rows for c in chunks)
    return rows, time.perf_counter() - start


# --------------------------------------------------------------------------------------------------- stages


def batches_of(table: pa.Table, size: int, limit: int = MAX_PREPARED_BATCHES) -> list[pa.Table]:
    """Up to `limit` consecutive slices of `size` rows (only full ones, unless the table is smaller)."""
    if table.num_rows <= size:
        return [table]
    count = min(limit, table.num_rows // size)
    return [table.slice(i * size, size) for i in range(count)]


def output_schema(predictor: Predictor, outputs: dict[str, np.ndarray]) -> pa.Schema:
    """The output columns exactly as `tfpredict predict` writes them (the job's own schema function)."""
    from ..pipeline import output_schema as job_schema

    declared = {
        k: output_type(t.dtype, t.shape) for k, t in predictor.signatures[predictor.signature].outputs.items()
    }
    return job_schema(list(outputs), declared, outputs, None, ())


def write_rate(
    predictor: Predictor, outputs: list[dict[str, np.ndarray]], directory: Path, fmt: str, seconds: float
) -> tuple[int, float]:
    """Rows/s of turning model outputs into Arrow and writing them in format fmt (output files rewritten)."""
    schema = output_schema(predictor, outputs[0])
    path = directory / f"out.{fmt}"
    rows, start = 0, time.perf_counter()
    writer = open_writer(path, schema, *output_format(path))  # one file, as the job writes one
    for out in itertools.cycle(outputs):
        writer.write(outputs_to_batch(out, schema))
        rows += len(next(iter(out.values())))
        if time.perf_counter() - start >= seconds:
            break
    writer.close()
    return rows, time.perf_counter() - start


def model_rate(
    predictor: Predictor, feeds: list[Feeds], seconds: float, warmup: bool = True
) -> tuple[int, float]:
    def call(f: Feeds) -> int:
        predictor.predict_feeds(f)
        return f.num_rows

    return timed_rate(call, feeds, seconds, warmup=warmup)


def end_to_end(
    predictor: Predictor, path: Path, directory: Path, fmt: str, batch_size: int, min_seconds: float = 0.0
) -> tuple[int, float]:
    """The real pipelined job (`predict_files`) on a sample file: rows and wall seconds of its fastest run.

    A pass shorter than `min_seconds` is repeated until that much time was spent (the fastest run counts:
    on a shared machine a run can lose time to a neighbour, never gain it).
    """
    from ..pipeline import predict_files

    best: tuple[int, float] | None = None
    spent = 0.0
    while best is None or spent < min_seconds:
        result = predict_files(predictor, path, directory / f"e2e.{fmt}", batch_size=batch_size)
        spent += result.seconds
        if best is None or result.rows / max(result.seconds, 1e-9) > best[0] / max(best[1], 1e-9):
            best = (result.rows, result.seconds)
    return best


def per_row_rate(predictor: Predictor, table: pa.Table, seconds: float) -> tuple[int, float]:
    """One predict() call per row: the naive `input_fn` / serving-loop pattern (each row a one-row table, so
    multi-valued features need no special casing)."""
    rows = [table.slice(i, 1) for i in range(min(table.num_rows, 200))]

    def call(row: pa.Table) -> int:
        predictor.predict(row)
        return 1

    return timed_rate(call, rows, seconds)


# ----------------------------------------------------------------------------------------- inside the model

#: Op types -> what a person recognizes in their model. Anything else is "other".
OP_CATEGORIES = {
    "dense layers": (
        "MatMul",
        "BatchMatMul",
        "BatchMatMulV2",
        "BiasAdd",
        "Relu",
        "Relu6",
        "Elu",
        "Selu",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "_FusedMatMul",
        "Conv2D",
        "_FusedConv2D",
        "LeakyRelu",
    ),
    "embeddings / one-hot": (
        "OneHot",
        "SparseToDense",
        "Bincount",
        "DenseBincount",
        "GatherV2",
        "ResourceGather",
        "Gather",
        "SparseSegmentMean",
        "SparseSegmentSum",
        "SparseSegmentSqrtN",
        "SparseFillEmptyRows",
        "SparseReshape",
        "Unique",
        "SparseSegmentMeanWithNumSegments",
        "SparseSegmentSumWithNumSegments",
        "SparseSegmentSqrtNWithNumSegments",
        "SparseTensorDenseMatMul",
        "UniqueV2",
    ),
    "string hashing / vocabulary": (
        "StringToHashBucketFast",
        "StringToHashBucketStrong",
        "StringToHashBucket",
        "LookupTableFindV2",
        "LookupTableFind",
        "HashTableV2",
        "StringSplit",
        "StringSplitV2",
        "AsString",
        "StringJoin",
        "StaticRegexReplace",
        "RegexReplace",
        "StringLower",
        "Substr",
    ),
    "example parsing": ("ParseExample", "ParseExampleV2", "ParseSingleExample"),
}
_CATEGORY_OF = {op: cat for cat, ops in OP_CATEGORIES.items() for op in ops}
_NOT_WORK = {
    "_SOURCE",
    "_Recv",
    "_Send",
    "_Arg",
    "_Retval",
    "NoOp",
    "Const",
    "Placeholder",
    "VarHandleOp",
    "ReadVariableOp",
    "Identity",
    "VariableV2",
    "_HostRecv",
    "_HostSend",
}


def trace_ops(
    predictor: Predictor, feeds: Feeds, top: int = 12, runs: int = 3
) -> tuple[list[OpTime], dict[str, float]]:
    """The model's graph nodes by time for one call (mean of `runs`), from Predictor.trace's step stats.

    Returns the top nodes and the time per category ("dense layers", "embeddings / one-hot", ...) as shares
    of all traced op time.
    """
    totals: dict[str, float] = {}
    types: dict[str, str] = {}
    for node in predictor.trace(feeds, runs=runs):
        if node.op_type in _NOT_WORK or node.name.startswith("_"):
            continue
        totals[node.name] = node.ms
        types[node.name] = node.op_type
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    ops = [OpTime(n, types[n], _CATEGORY_OF.get(types[n], "other"), ms, ms / whole) for n, ms in ranked[:top]]
    categories: dict[str, float] = {}
    for n, ms in totals.items():
        cat = _CATEGORY_OF.get(types[n], "other")
        categories[cat] = categories.get(cat, 0.0) + ms / whole
    return ops, dict(sorted(categories.items(), key=lambda kv: -kv[1]))


# -------------------------------------------------------------------------------------------------- helpers


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_settings(cpus: int) -> list[tuple[int | None, int | None]]:
    """(intra, inter) pairs worth trying: TF's default, all cores in one op, ops side by side, one core."""
    pairs: list[tuple[int | None, int | None]] = [(None, None), (cpus, 1), (cpus, 2), (1, 1), (1, 2)]
    if cpus >= 4:
        pairs += [(cpus // 2, 2), (max(1, cpus - 1), 1)]
    return list(dict.fromkeys(pairs))


class Scratch:
    """A temporary directory for sample files and outputs, removed on exit."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="tfpredict-doctor-"))
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def input_files(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[InputFile]:
    files = expand_inputs([data] if isinstance(data, (str, os.PathLike)) else list(data))
    if not files:
        raise InputError("no input files given")
    return files


# -------------------------------------------------------------------------------------------------- the run


def _load(
    export: str | os.PathLike[str],
    signature: str | None,
    intra: int | None = None,
    inter: int | None = None,
    xla: bool = False,
    columns: dict[str, Any] | None = None,
) -> Predictor:
    from ..predictor import Predictor

    allow = (columns or {}).get("allow_missing", ())
    assemble = (columns or {}).get("assembled")
    return Predictor.load(
        export,
        signature,
        intra_op_threads=intra,
        inter_op_threads=inter,
        xla=xla,
        allow_missing=allow,
        assemble=assemble,
    )


def _threads(intra: int | None, inter: int | None) -> dict[str, Any]:
    return {"threads": intra, "inter_op_threads": inter}


def _threads_label(pair: tuple[int | None, int | None]) -> str:
    return "default threads" if pair == (None, None) else f"threads {pair[0]}/{pair[1]}"


def measure(
    export: str | os.PathLike[str],
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    rows: int | None = None,
    seconds: float = DEFAULT_SECONDS,
    signature: str | None = None,
    output_format: str = "parquet",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[str], None] | None = None,
    allow_missing: AllowMissing = (),
    assemble: Assemble | None = None,
) -> Measurements:
    """Measure every stage and sweep on a sample of `data`, within about `seconds` of wall time.

    Plan (fractions of the budget left after loading): reading 4-10%, conversion 3%, the model 4%, writing
    2%, batch-size points 1.5% each, thread settings and XLA ~2% each, per-row 1.5%, formats ~5%, and the
    pipelined job ~3% per run (default settings, up to five candidates, re-runs of the best). A phase that
    no longer fits is skipped and listed in `skipped`. allow_missing, assemble: as `tfpredict predict`
    takes them (a missing column is an error before anything is measured).
    """
    budget = Budget(seconds)
    say = progress or (lambda text: log.info("%s", text))
    files = input_files(data)
    assembled = resolve_assemble(assemble, input_columns(files[0]) if assemble else None)
    columns: dict[str, Any] = {"allow_missing": allow_missing, "assembled": assembled}
    say("loading the export")
    predictor = _load(export, signature, columns=columns)
    budget.rebase()
    schema = source_schema(predictor.inputs, assembled)  # the columns read: assembled inputs' sources
    fmt_in = files[0].format
    cpus = cpu_count()
    skipped: list[str] = []
    e2e_share = 0.03

    # A probe on the first rows: the model's cost per row says which batch sizes are cheap enough to warm up.
    say("probing the first rows")
    probe = read_sample(files, schema, 1024, 1, 0.0, budget.slice(0.05), columns=columns)
    if not probe.rows:
        raise InputError(f"{files[0]}: no rows to measure")
    head = probe.table()
    probe_feeds = predictor.convert(head)
    predictor.predict_feeds(probe_feeds)
    start = time.perf_counter()
    predictor.predict_feeds(probe_feeds)
    model_s = time.perf_counter() - start
    model_cost = model_s / probe.rows

    def warm(rows: int, seconds: float) -> bool:
        """Warm up a new batch size only when one call is cheap next to its time slice."""
        return rows * model_cost < seconds / 4

    keep = MAX_SAMPLE_ROWS if rows is None else min(rows, MAX_SAMPLE_ROWS)

    # ---- stages, each alone, at the default batch size
    in_label = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines", "tfrecord": "TFRecord"}[fmt_in]
    say(f"reading {in_label}")
    sample = read_sample(
        files, schema, batch_size, keep, budget.slice(0.04), budget.slice(0.1), columns=columns
    )
    stages = {"read": Stage("read", f"read {in_label}", *sample.steady_rate())}
    stages["read"].startup_seconds = sample.startup_seconds

    say("feature conversion")
    feeds: list[Feeds] = []
    convert_rows, convert_seconds, slice_ = 0, 0.0, budget.slice(0.03)
    for chunk in sample.chunks:
        start = time.perf_counter()
        feeds.append(predictor.convert(chunk.batch))
        convert_seconds += time.perf_counter() - start
        convert_rows += chunk.num_rows
        if convert_seconds >= slice_:
            break
    stages["convert"] = Stage("convert", "feature conversion", convert_rows, convert_seconds)

    say("the model alone")
    outputs: list[dict[str, np.ndarray]] = []
    model_rows, model_seconds, slice_ = 0, 0.0, budget.slice(0.04)
    for f in itertools.cycle(feeds):
        start = time.perf_counter()
        out = predictor.predict_feeds(f)
        model_seconds += time.perf_counter() - start
        model_rows += f.num_rows
        if len(outputs) < min(len(feeds), 8):
            outputs.append(out)
        if model_seconds >= slice_:
            break
    stages["model"] = Stage(
        "model", f"model (batch {min(batch_size, sample.rows):,})", model_rows, model_seconds
    )

    with Scratch() as tmp:
        say("writing")
        w_rows, w_seconds = write_rate(predictor, outputs, tmp, output_format, budget.slice(0.02))
        stages["write"] = Stage("write", f"write {output_format}", w_rows, w_seconds)
        per_row_s = {k: 1.0 / st.rows_per_s for k, st in stages.items() if st.rows_per_s > 0}
        total = sum(per_row_s.values())
        for k, st in stages.items():
            st.share = per_row_s.get(k, 0.0) / total if total > 0 else 0.0

        # The pipelined job's sample: one pass should take ~e2e_share of the budget (at least one batch).
        pass_rows = int(e2e_share * budget.usable / max(total, 1e-12))
        sample.truncate(max(pass_rows, batch_size))
        table = sample.table()
        say(f"the pipelined job on {sample.rows:,} rows")
        sample_file = write_sample_file(sample, tmp, fmt_in) or write_sample_file(sample, tmp, "parquet")
        assert sample_file is not None
        e2e_min = 0.02 * budget.usable
        e_rows, e_seconds = end_to_end(predictor, sample_file, tmp, output_format, batch_size, e2e_min)
        stages["end_to_end"] = Stage("end_to_end", "end to end (pipelined)", e_rows, e_seconds)
        e2e_pass = max(e_seconds, e2e_min)

        m = Measurements(
            export=str(predictor.export_dir),
            data=", ".join(str(f.path) for f in files),
            input_format=fmt_in,
            output_format=output_format,
            signature=predictor.signature,
            model_path=predictor.path,
            cpus=cpus,
            sample_rows=sample.rows,
            file_exhausted=sample.exhausted,
            batch_size=batch_size,
            stages=stages,
            skipped=skipped,
            budget=seconds,
        )

        # ---- batch size, model alone: 1, 32, 256, ... until rows/s stops rising
        say("batch size sweep")
        best_rate, best_batch = 0.0, min(batch_size, sample.rows)
        prepared: dict[int, list[Feeds]] = {}
        sizes = [b for b in BATCH_SIZES if b <= sample.rows] or [sample.rows]
        for b in sizes:
            if len(m.batch_sweep) >= 2 and not budget.allows(0.55):  # 1 and 32 always (cheap)
                skipped.append(f"batch sizes from {b:,} (time budget)")
                break
            prepared[b] = [predictor.convert(t) for t in batches_of(table, b)]
            slice_ = budget.slice(0.015)
            n, s = model_rate(predictor, prepared[b], slice_, warmup=warm(b, slice_))
            rate = n / s
            m.batch_sweep.append(Point({"batch_size": b}, rate))
            if rate > best_rate * 1.02:
                best_rate, best_batch = rate, b
            elif b >= 1024:
                break  # rows/s stopped rising
            if b != best_batch:
                prepared.pop(b, None)
        if best_batch not in prepared:
            prepared[best_batch] = [predictor.convert(t) for t in batches_of(table, best_batch)]
        best_feeds = prepared[best_batch]
        if not best_rate:
            n, s = model_rate(predictor, best_feeds, budget.slice(0.015), warmup=False)
            best_rate = n / s

        # ---- inside the model: one large batch, traced
        say("tracing the model's ops")
        big = max(best_batch, min(DEFAULT_BATCH_SIZE, sample.rows))
        trace_feeds = best_feeds[0] if big == best_batch else predictor.convert(table.slice(0, big))
        try:
            m.top_ops, m.op_categories = trace_ops(predictor, trace_feeds)
        except Exception as e:  # noqa: BLE001 - a trace is a bonus; never fail the diagnosis for it
            log.info("op trace failed: %s", e)
            skipped.append(f"op trace ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})")

        # ---- naive per-row prediction
        say("per-row prediction")
        n, s = per_row_rate(predictor, table, budget.slice(0.015))
        m.per_row = Point({"batch_size": 1, "mode": "predict() per row"}, n / s)

        # ---- threads, model alone, at the best batch size
        say("thread sweep")
        m.thread_sweep.append(Point(_threads(None, None), best_rate, "TensorFlow's default"))
        best_pair: tuple[int | None, int | None] = (None, None)
        best_pair_rate = best_rate
        for intra, inter in thread_settings(cpus)[1:]:
            if not budget.allows(0.45):
                skipped.append(f"threads {intra}/{inter} (time budget)")
                continue
            p = _load(export, predictor.signature, intra, inter, columns=columns)
            try:
                p.predict_feeds(best_feeds[0])  # a new session's first run optimizes the graph
                n, s = model_rate(p, best_feeds, budget.slice(0.015), warmup=False)
            finally:
                p.close()
            m.thread_sweep.append(Point(_threads(intra, inter), n / s))
            if n / s > best_pair_rate:
                best_pair, best_pair_rate = (intra, inter), n / s

        # ---- XLA
        if budget.allows(0.4):
            say("XLA")
            m.xla_sweep.append(Point({"xla": False, **_threads(*best_pair)}, best_pair_rate))
            try:
                p = _load(export, predictor.signature, *best_pair, xla=True, columns=columns)
                try:
                    p.predict_feeds(best_feeds[0])  # compiles
                    n, s = model_rate(p, best_feeds, budget.slice(0.02), warmup=False)
                    m.xla_sweep.append(Point({"xla": True, **_threads(*best_pair)}, n / s))
                finally:
                    p.close()
            except Exception as e:  # noqa: BLE001 - an export XLA cannot compile is a finding, not a failure
                m.xla_sweep.append(
                    Point(
                        {"xla": True, **_threads(*best_pair)},
                        None,
                        f"cannot compile: {str(e).splitlines()[0][:120]}",
                    )
                )
        else:
            skipped.append("XLA (time budget)")

        # ---- input format: the same sample read as CSV, Parquet, JSON Lines (and from memory: no reading)
        say("input formats")
        for fmt in dict.fromkeys([fmt_in, "csv", "parquet", "jsonl"]):
            if fmt == "tfrecord":
                continue
            if not budget.allows(0.33):
                skipped.append(f"reading the sample as {fmt} (time budget)")
                continue
            path = (
                sample_file
                if sample_file.name.startswith(f"sample.{fmt}")
                else write_sample_file(sample, tmp, fmt)
            )
            if path is None:
                m.format_sweep.append(
                    Point(
                        {"format": fmt, "step": "read"}, None, "the sample cannot be written in this format"
                    )
                )
                continue
            try:
                n, s = read_rate(path, schema, batch_size, columns)
            except TfpredictError as e:  # e.g. a value JSON cannot carry the way the model wants it
                m.format_sweep.append(Point({"format": fmt, "step": "read"}, None, f"cannot read back: {e}"))
                continue
            m.format_sweep.append(Point({"format": fmt, "step": "read"}, n / s))
        # From memory there is nothing to read: Predictor.predict on an Arrow table (conversion + model).
        if budget.allows(0.3):

            def predict_table(t: pa.Table) -> int:
                predictor.predict(t)
                return t.num_rows

            n, s = timed_rate(predict_table, batches_of(table, batch_size, limit=8), budget.slice(0.015))
            m.format_sweep.append(
                Point({"format": "memory", "step": "predict"}, n / s, "Predictor.predict on an Arrow table")
            )

        # ---- the pipelined job at candidate settings (what `tfpredict predict` will do), default first.
        # Round one runs each candidate once; round two re-runs the default and the two best, and each keeps
        # its best run: on a shared machine a run can lose a second to a neighbour, never gain one.
        say("the pipelined job at candidate settings")
        done: dict[tuple[int, tuple[int | None, int | None]], float] = {
            (batch_size, (None, None)): e_rows / e_seconds
        }
        loaded: dict[tuple[int | None, int | None], Predictor] = {(None, None): predictor}

        def run_candidate(
            b: int, pair: tuple[int | None, int | None], path: Path = sample_file
        ) -> float | None:
            if not budget.allows(0.02) or budget.left < 1.5 * e2e_pass + 0.02 * budget.usable:
                skipped.append(
                    f"pipelined run at batch {b:,}, {_threads_label(pair)} on {path.suffix} (time budget)"
                )
                return None
            if pair not in loaded:
                loaded[pair] = _load(export, predictor.signature, *pair, columns=columns)
                loaded[pair].predict_feeds(best_feeds[0])  # first run of a session optimizes the graph
            n, s = end_to_end(loaded[pair], path, tmp, output_format, b, e2e_min)
            rate = n / s
            if path == sample_file:
                done[(b, pair)] = max(rate, done.get((b, pair), 0.0))
            return rate

        try:
            for b in dict.fromkeys([best_batch, 2 * batch_size, 4 * best_batch]):
                if b != batch_size and b <= max(sample.rows, batch_size):
                    run_candidate(b, (None, None))
            e2e_batch = max((k for k in done if k[1] == (None, None)), key=lambda k: done[k])[0]
            ranked = sorted(m.thread_sweep[1:], key=lambda p: -(p.rows_per_s or 0))
            pairs = [(p.settings["threads"], p.settings["inter_op_threads"]) for p in ranked[:1]]
            for pair in dict.fromkeys([*pairs, (1, 1)]):
                if (e2e_batch, pair) not in done:
                    run_candidate(e2e_batch, pair)
            top = sorted(done, key=lambda k: -done[k])[:2]
            for b, pair in dict.fromkeys([(batch_size, (None, None)), *top]):
                run_candidate(b, pair)
            # The job at the defaults, as it ran at its best (its first run may have paid for warm-ups).
            default_rate = done[(batch_size, (None, None))]
            stages["end_to_end"].seconds = e_rows / default_rate
            for (b, pair), rate in done.items():
                m.end_to_end_sweep.append(Point({"batch_size": b, **_threads(*pair)}, rate))
            parquet = tmp / "sample.parquet"
            if fmt_in != "parquet" and parquet.exists():
                b, pair = max(done, key=lambda k: done[k])
                parquet_rate = run_candidate(b, pair, parquet)
                if parquet_rate is not None:
                    m.format_sweep.append(
                        Point(
                            {"format": "parquet", "step": "end_to_end", "batch_size": b, **_threads(*pair)},
                            parquet_rate,
                        )
                    )
        finally:
            for p in loaded.values():
                p.close()
    m.seconds = budget.used
    return m
