"""The Ray Data engine: the batch job of `tfpredict predict` on a Ray cluster, with the same Predictor.

    Ray's readers (CSV / Parquet / JSON Lines / TFRecord, typed by the model's feature schema)
      -> map_batches(PredictBatches) on an actor pool: each actor loads the export once, predicts blocks
      -> Ray's writers (Parquet / CSV / JSON Lines) into a hidden directory, renamed to the target on success

The export travels through Ray's object store (a tar of the version directory, unpacked once per node), so
only the inputs and the output need a path every node can reach. Output columns are the local engine's:
`--keep` columns, then one column per output with the types `io.writers` gives them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError, OutputError, TfpredictError, UsageError
from ..features import Assemble, FeatureSpec, resolve_assemble, source_schema
from ..io.readers import (
    InputFile,
    check_columns,
    column_type,
    expand_inputs,
    floats_to_ints,
    input_columns,
    read_inputs,
    value_type,
)
from ..io.writers import json_text, output_format, output_type, outputs_to_batch
from ..pipeline import output_schema  # the local engine's output columns, so both engines agree

if TYPE_CHECKING:
    from ..predictor import Predictor

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'tfpredict[ray]'"
#: Rows per model call, as in the local engine (flat beyond ~8k rows on CPU).
DEFAULT_BATCH_SIZE = 8192
#: Object store of a local cluster we start ourselves: batches stream through it, a few at a time.
LOCAL_OBJECT_STORE_BYTES = 512 << 20
#: CPUs each of Ray's read and write tasks reserves. Fractional: they mostly wait on files, and a node whose
#: CPUs are taken by predictor actors must still fit them (Ray's default of 1 would deadlock a 1-CPU node).
IO_TASK_CPUS = 0.25
#: How long the job waits for its actors to start (a new process importing TensorFlow and loading the export).
ACTOR_START_SECONDS = 600
#: Roughly the bytes of input per Ray block (Ray's readers cut files into blocks of ~128 MiB of memory).
BLOCK_BYTES = 64 << 20
#: Ray's `include_paths` column: lets an actor name the file of a bad row.
PATH_COLUMN = "path"
#: Input files whose columns the driver checks before starting (a header / footer / first block each).
PRECHECK_FILES = 64

_ROW_PREFIX = re.compile(r"^Row \d+:\s*")


def import_ray() -> Any:
    """The `ray` module, or a UsageError with the one-line install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# ----------------------------------------------------------------------------------------------- the export


@dataclass(frozen=True)
class ExportPackage:
    """An export as the actors get it: its files in Ray's object store (unpacked once per node), or a path
    every node can read as it is (a shared mount)."""

    path: str
    digest: str | None = None
    # [ObjectRef of the tar bytes], in a list so that Ray hands the actor the reference, not the bytes.
    files: list[Any] | None = None

    def materialize(self) -> str:
        """A local directory holding the export, on the node this runs on."""
        if self.files is None or self.digest is None:
            return self.path
        import ray

        base = Path(tempfile.gettempdir()) / "tfpredict-exports"
        final = base / self.digest
        name = Path(self.path).name
        if not (final / name).is_dir():
            base.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{self.digest}.", dir=base))
            with tarfile.open(fileobj=io.BytesIO(ray.get(self.files[0])), mode="r") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.10.12
                    tar.extractall(tmp)  # noqa: S202 - our own archive
            try:
                os.rename(tmp, final)  # atomic: another actor on this node may have won the race
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        return str(final / name)


def package_export(export: str | os.PathLike[str], *, ship: bool = True) -> ExportPackage:
    """Put a local export's version directory into the object store (ship=False: actors load `export`)."""
    if not ship:
        return ExportPackage(str(export))
    ray = import_ray()
    from ..savedmodel import resolve_export_dir

    version_dir = resolve_export_dir(export)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(version_dir), arcname=version_dir.name)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:24]
    return ExportPackage(str(version_dir), digest, [ray.put(data)])


# ----------------------------------------------------------------------------------------------- the actors


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

        from ..predictor import Predictor

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
        kept = _cast_keep(batch.select(self.keep), self.keep_types)
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

        def fails(start: int, stop: int) -> str | None:
            try:
                self._convert(features.slice(start, stop - start))
            except InputError as e:
                return e.message
            return None

        i, message = _first_failure(features.num_rows, fails)
        return InputError(_where(paths, i) + _ROW_PREFIX.sub("", message or first.message))


def _first_failure(n: int, fails: Callable[[int, int], str | None]) -> tuple[int, str | None]:
    """The first index in [0, n) whose one-row slice fails (by bisection), with its message."""
    lo, hi, message = 0, n, None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        m = fails(lo, mid)
        if m is not None:
            hi, message = mid, m
        else:
            lo = mid
    return lo, fails(lo, lo + 1) or message


def _cast_keep(kept: pa.RecordBatch, types: dict[str, pa.DataType]) -> pa.RecordBatch:
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


def _where(paths: pa.Array | None, i: int) -> str:
    if paths is None or i >= len(paths):
        return ""
    return f"{paths[i].as_py()}: "


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if len(batches) == 1:
        return batches[0]
    return pa.RecordBatch.from_pylist([], schema=table.schema) if not batches else pa.concat_batches(batches)


def typed_features(
    batch: pa.RecordBatch, schema: dict[str, FeatureSpec], paths: pa.Array | None
) -> pa.RecordBatch:
    """The model's feature columns of a batch in the model's types (Ray's readers guess types per file:
    int for a float feature, binary for TFRecord strings, large_string from Parquet, ...)."""
    names, columns = [], []
    for name in batch.schema.names:
        spec = schema.get(name)
        if spec is None:
            continue
        names.append(name)
        columns.append(_as_model_type(batch.column(name), spec, paths))
    return pa.RecordBatch.from_arrays(columns, names=names)


def _as_model_type(col: pa.Array, spec: FeatureSpec, paths: pa.Array | None) -> pa.Array:
    target = column_type(spec, "parquet")
    if target is None or col.type == target:
        return col
    t = col.type
    if pa.types.is_list(target) and _is_list(t) and _list_depth(t) != _list_depth(target):
        return col  # flat lists for a [3,3] feature, say: the core checks and reshapes them
    if pa.types.is_integer(target) and pa.types.is_floating(t):
        ints, bad = floats_to_ints(col, target)  # 180.0 is 180; 180.5 is an error naming its file
        if bad is not None:
            raise InputError(
                f"{_where(paths, bad)}column '{spec.name}': expected an integer, found {col[bad].as_py()!r}"
            )
        return ints
    if pa.types.is_list(target):
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return (
                col if pa.types.is_string(t) else col.cast(pa.string())
            )  # JSON-list text: the core parses it
        if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
            target = value_type(spec)  # one value per row for a multi-valued feature: the core accepts it
            if t == target:
                return col
    elif pa.types.is_string(target) and not (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_large_string(t)
        or pa.types.is_null(t)
    ):
        return col  # a non-text column for a string feature: the core names it clearly
    try:
        return pc.cast(col, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        first = str(exc).splitlines()[0]

        def fails(start: int, stop: int) -> str | None:
            try:
                pc.cast(col.slice(start, stop - start), target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                return str(e).splitlines()[0]
            return None

        i, _ = _first_failure(len(col), fails)
        value = col[i].as_py() if i < len(col) else None
        raise InputError(
            f"{_where(paths, i)}column '{spec.name}': expected {_type_words(target)}, "
            f"found {value!r} ({first})"
        ) from None


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _list_depth(t: pa.DataType) -> int:
    depth = 0
    while _is_list(t):
        depth, t = depth + 1, t.value_type
    return depth


def _type_words(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"a list of {_type_words(t.value_type)}"
    if pa.types.is_floating(t):
        return "a number"
    if pa.types.is_integer(t):
        return "an integer"
    return str(t)


def lists_as_json_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """List columns as JSON text, which CSV can hold (the local engine's CSV writer does the same)."""
    columns, fields = [], []
    for f, col in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type):
            col, f = json_text(col), pa.field(f.name, pa.string())
        columns.append(col)
        fields.append(f)
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


# ----------------------------------------------------------------------------------------------- datasets


def plan_workers(
    workers: int | None, threads: int | None, num_cpus: float | None = None
) -> tuple[int, int, float]:
    """(actors, TensorFlow threads per actor, CPUs each actor reserves) for the connected cluster.

    By default one actor per node, running TensorFlow on the node's CPUs: one copy of the model per machine,
    and on 2 cores one actor of 2 threads predicts faster than two of 1 (benchmarks/ray_engine.py).
    Reservations leave each node at least one CPU (half of a 1-CPU node) for Ray's read and write tasks:
    an actor pool holding every CPU would starve the readers.
    """
    ray = import_ray()
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, not {threads}")
    node_cpus = [
        float(n["Resources"]["CPU"])
        for n in ray.nodes()
        if n.get("Alive") and n.get("Resources", {}).get("CPU")
    ] or [1.0]
    total, smallest = sum(node_cpus), min(node_cpus)
    if workers is None:
        workers = len(node_cpus) if threads is None else max(1, int(total // threads))
    if threads is None:
        threads = max(1, int(min(smallest, total / workers)))
    if num_cpus is None:
        per_node_room = smallest - min(1.0, smallest / 2)
        room = sum(c - min(1.0, c / 2) for c in node_cpus)
        num_cpus = max(0.01, min(float(threads), per_node_room, room / workers))
    return workers, threads, num_cpus


def predict_dataset(
    ds: Any,
    export: str | os.PathLike[str] | ExportPackage,
    *,
    signature: str | None = None,
    outputs: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    threads: int | None = None,
    inter_op_threads: int | None = None,
    xla: bool = False,
    num_cpus: float | None = None,
    ship_export: bool = True,
    text_lists: bool = False,
    keep_types: dict[str, pa.DataType] | None = None,
    stats: Any = None,
    allow_missing: bool | Sequence[str] = (),
    assembled: dict[str, list[str]] | None = None,
) -> Any:
    """Add a prediction step to a `ray.data.Dataset`: returns the Dataset of `keep` columns + model outputs.

    Runs on an actor pool of `workers` actors (default: one per node of the cluster), each loading the export
    once. ship_export: send the export through the object store (else every node must read `export`).
    Feature columns may come in any type Ray reads (int for a float feature, ...); they are cast to the
    model's types. Nothing runs until the Dataset is consumed (written, iterated, materialized).
    """
    import_ray()
    import ray.data

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    package = export if isinstance(export, ExportPackage) else package_export(export, ship=ship_export)
    workers, threads, num_cpus = plan_workers(workers, threads, num_cpus)
    settings = PredictSettings(
        signature=signature,
        outputs=tuple(outputs) if outputs else None,
        keep=tuple(dict.fromkeys(keep)),
        batch_size=batch_size,
        threads=threads,
        inter_op_threads=inter_op_threads,
        xla=xla,
        text_lists=text_lists,
        keep_types=tuple((keep_types or {}).items()),
        allow_missing=allow_missing if isinstance(allow_missing, bool) else tuple(allow_missing),
        assembled=tuple((k, tuple(v)) for k, v in (assembled or {}).items()),
    )
    return ds.map_batches(
        PredictBatches,
        fn_constructor_kwargs={"export": package, "settings": settings, "stats": stats},
        # Whole blocks, sliced into model calls by the actor: Ray would otherwise concatenate blocks of
        # different files, whose types may differ (CSV text vs Parquet lists, int32 vs int64 ids, ...).
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=num_cpus,
        # Ray Data's default placement for the pool is SPREAD: a job of N actors on N nodes uses them all.
    )


def read_files(
    files: Sequence[InputFile], schema: dict[str, FeatureSpec], keep: Sequence[str], include_paths: bool
) -> Any:
    """The input files as one Dataset, read by Ray's own readers with the model's column types.

    Consecutive files of one format are one read (in order); different formats are a union, which Ray
    does not keep in order.
    """
    groups: list[list[InputFile]] = []
    for f in files:
        if groups and _group_key(groups[-1][0]) == _group_key(f):
            groups[-1].append(f)
        else:
            groups.append([f])
    datasets = [_read_group(g, schema, keep, include_paths) for g in groups]
    return datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])


def _group_key(f: InputFile) -> tuple[str, str | None, bool]:
    return f.format, f.compression, _is_tsv(f)


def _is_tsv(f: InputFile) -> bool:
    suffixes = [s.lower() for s in f.path.suffixes]
    return (suffixes[-2:-1] if f.compression else suffixes[-1:]) == [".tsv"]


def _read_group(
    group: list[InputFile], schema: dict[str, FeatureSpec], keep: Sequence[str], include_paths: bool
) -> Any:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import ray.data

    paths = [str(f.path) for f in group]
    first = group[0]
    stream_args = {"compression": "gzip"} if first.compression else None
    wanted = list(dict.fromkeys([*schema, *keep]))
    if first.format == "csv":
        types = {n: column_type(s, "csv") or pa.string() for n, s in schema.items()}
        types.update({k: pa.string() for k in keep if k not in schema})  # ids pass through as written
        return ray.data.read_csv(
            paths,
            num_cpus=IO_TASK_CPUS,
            include_paths=include_paths,
            arrow_open_stream_args=stream_args,
            parse_options=pacsv.ParseOptions(delimiter="\t" if _is_tsv(first) else ","),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=wanted,
                include_missing_columns=True,  # an absent optional feature is missing in every row
                strings_can_be_null=True,
            ),
        )
    if first.format == "parquet":
        import pyarrow.parquet as pq

        present = set(pq.read_schema(str(first.path)).names)
        return ray.data.read_parquet(
            paths,
            columns=[n for n in wanted if n in present],
            include_paths=include_paths,
            num_cpus=IO_TASK_CPUS,
        )
    if first.format == "jsonl":
        # Fixed-shape features typed (nested lists for a [3,3] input); var-len ones left to Ray's reader.
        fields = [pa.field(n, column_type(s, "jsonl")) for n, s in schema.items() if s.kind != "varlen"]
        return ray.data.read_json(
            paths,
            num_cpus=IO_TASK_CPUS,
            include_paths=include_paths,
            arrow_open_stream_args=stream_args,
            file_extensions=None,
            parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema(fields), unexpected_field_behavior="infer"
            ),
        )
    return ray.data.read_tfrecords(
        paths, num_cpus=IO_TASK_CPUS, include_paths=include_paths, arrow_open_stream_args=stream_args
    )


# ----------------------------------------------------------------------------------------------- the job


@dataclass
class RayPredictResult:
    """What a Ray job did: rows written, wall seconds, where, and what each actor did."""

    rows: int
    seconds: float
    output: Path
    files: list[Path]
    actors: list[ActorStats] = field(default_factory=list)
    node_addresses: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # where the seconds went, in order

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def nodes(self) -> list[str]:
        return sorted({a.node for a in self.actors if a.rows})

    def summary(self) -> str:
        return (
            f"{self.rows:,} rows in {self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s) "
            f"-> {self.output}/ ({len(self.files)} file{'s' if len(self.files) != 1 else ''})"
        )

    def actor_lines(self) -> list[str]:
        lines = [f"ray: {len(self.actors)} actor(s) on {len(self.nodes)} node(s)"]
        if self.phases:
            lines.append("ray: seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items()))
        for a in sorted(self.actors, key=lambda a: (a.node, a.actor)):
            where = self.node_addresses.get(a.node, "")
            lines.append(
                f"ray: node {a.node[:12]}{f' ({where})' if where else ''} actor {a.actor[:12]}: "
                f"{a.rows:,} rows, "
                f"{a.rows_per_second:,.0f} rows/s while busy, loaded in {a.load_seconds:.1f} s"
            )
        return lines


def check_output_dir(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The output directory (which must not exist yet, or be empty) and its format (from its extension)."""
    out = Path(path)
    fmt, compression = output_format(out)
    if compression:
        raise OutputError(
            f"{out}: compressed output is not supported with --engine ray (use .parquet, .csv or .jsonl)"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{out}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: output directory {parent} is not writable")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(
            f"{out}: already exists; --engine ray writes a new directory of files (remove it or choose "
            "another name)"
        )
    return out, fmt


@contextlib.contextmanager
def connect(address: str | None = None, *, quiet: bool = True) -> Iterator[Any]:
    """Connect to the cluster at `address` (or RAY_ADDRESS), else start a local one on this machine's CPUs;
    shut down only what we started. A session already initialised by the caller is used as is."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {
        "log_to_driver": not quiet,
        "logging_level": logging.ERROR if quiet else logging.INFO,
    }
    with _quiet_ray_loggers(quiet):
        if address:
            try:
                ray.init(address=address, **options)
            except ConnectionError as exc:
                raise UsageError(
                    f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}"
                ) from None
        else:
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                _node_ip_address="127.0.0.1",
                **options,
            )
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _quiet_ray_loggers(quiet: bool) -> Iterator[None]:
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("ray", "ray.data")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(max(level, logging.ERROR) if level else logging.ERROR)


@contextlib.contextmanager
def _data_context(preserve_order: bool, progress: bool, quiet: bool) -> Iterator[None]:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.wait_for_min_actors_s)
    ctx.execution_options.preserve_order = preserve_order
    ctx.enable_progress_bars = progress
    # Start predicting once every actor has loaded the export: otherwise the first actor up takes all the
    # blocks of a small job (measured: 2 actors on 2 nodes, 8 small files, only one node worked).
    ctx.wait_for_min_actors_s = ACTOR_START_SECONDS
    try:
        with _quiet_ray_loggers(quiet), warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")  # Ray's advice on pool sizes and deprecations, not the user's
            yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.wait_for_min_actors_s = saved


def predict_files(
    export: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    address: str | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    signature: str | None = None,
    outputs: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    threads: int | None = None,
    inter_op_threads: int | None = None,
    xla: bool = False,
    preserve_order: bool = True,
    progress: bool = False,
    quiet: bool = True,
    allow_missing: bool | Sequence[str] = (),
    assemble: Assemble | None = None,
) -> RayPredictResult:
    """Predict every row of `inputs` on a Ray cluster and write a directory of files (Parquet, CSV or JSON
    Lines, from the directory's extension; Parquet without one) with the same columns as the local engine.

    address: a running cluster (default RAY_ADDRESS, else a local cluster is started and stopped).
    Bad input stops the job with an InputError naming the file and column; nothing appears at output_dir.
    allow_missing, assemble: as in the local engine (every file's columns are checked on the driver first).
    """
    ray = import_ray()
    started = time.perf_counter()
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    target, fmt = check_output_dir(output_dir)
    files = expand_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    keep = list(dict.fromkeys(keep))

    from ..predictor import Predictor

    # Load once on the driver too: a bad export, signature or output name fails here, before any cluster work.
    with Predictor.load(export, signature, intra_op_threads=1) as predictor:
        sig = predictor.signature
        assembled = resolve_assemble(assemble, input_columns(files[0]) if assemble else None)
        schema = source_schema(predictor.inputs_for(sig), assembled)
        columns: dict[str, Any] = {"allow_missing": allow_missing, "assembled": assembled}
        available = list(predictor.signatures[sig].outputs)
        export_dir = predictor.export_dir
        selected = list(outputs) if outputs else available
        unknown = [o for o in selected if o not in available]
        if unknown:
            raise UsageError(
                f"unknown output(s) {', '.join(unknown)}; the signature {sig!r} has: {', '.join(available)}"
            )
        clash = [k for k in keep if k in selected]
        if clash:
            raise UsageError(f"--keep column(s) {', '.join(clash)} have the same name as model outputs")
        tfrecord_serialized = predictor.path_for(sig) != "tensors"
        keep_types = _check_columns(files, schema, keep, tfrecord_serialized, **columns)

    blocks = max(1, sum(-(-f.path.stat().st_size // BLOCK_BYTES) or 1 for f in files))
    phases = {"driver: load export, check inputs": time.perf_counter() - started}
    mark = time.perf_counter()
    with connect(address, quiet=quiet), _data_context(preserve_order, progress, quiet):
        phases["connect / start cluster"] = time.perf_counter() - mark
        mark = time.perf_counter()
        if workers is None:
            # One actor per node, but no more than blocks to read: each loads TensorFlow and the export.
            workers = min(blocks, plan_workers(None, threads)[0])
        stats = ray.remote(num_cpus=0)(StatsCollector).remote()
        ds = read_files(
            files, schema, keep, include_paths=PATH_COLUMN not in schema and PATH_COLUMN not in keep
        )
        ds = predict_dataset(
            ds,
            package_export(export_dir),
            signature=sig,
            outputs=selected,
            keep=keep,
            batch_size=batch_size,
            workers=workers,
            threads=threads,
            inter_op_threads=inter_op_threads,
            xla=xla,
            text_lists=fmt == "csv",
            keep_types=keep_types,
            stats=stats,
            # A JSON line or a tf.Example may omit a feature (missing in that row), and a Ray block of them
            # then lacks the column: the driver checked the files' columns, the actors only convert.
            allow_missing=True if any(f.format in ("jsonl", "tfrecord") for f in files) else allow_missing,
            assembled=assembled,
        )
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            _write(ds, fmt, tmp, batch_size)
            tmp.mkdir(exist_ok=True)  # no rows (header-only inputs): an empty directory, not a missing one
            actors = ray.get(stats.summary.remote())
            if target.exists():
                target.rmdir()  # checked empty above
            os.replace(tmp, target)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            user_error = _user_error(exc, files, schema, keep, batch_size, tfrecord_serialized, columns)
            if user_error is not None:
                raise user_error from None
            raise
        addresses = {n["NodeID"]: n.get("NodeManagerAddress", "") for n in ray.nodes()}
        phases["job: read, predict, write"] = time.perf_counter() - mark
        mark = time.perf_counter()
    phases["disconnect / stop cluster"] = time.perf_counter() - mark
    written = sorted(p for p in target.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    return RayPredictResult(
        rows=sum(a.rows for a in actors),
        seconds=time.perf_counter() - started,
        output=target,
        files=written,
        actors=actors,
        node_addresses={a.node: addresses.get(a.node, "") for a in actors},
        phases=phases,
    )


def _write(ds: Any, fmt: str, path: Path, batch_size: int) -> None:
    # Files of at least this many rows: a few files per actor rather than one per batch.
    options = {"min_rows_per_file": max(batch_size, 1 << 17), "ray_remote_args": {"num_cpus": IO_TASK_CPUS}}
    if fmt == "parquet":
        ds.write_parquet(str(path), **options)
    elif fmt == "csv":
        ds.write_csv(str(path), **options)
    else:
        ds.write_json(str(path), **options)


def _check_columns(
    files: Sequence[InputFile],
    schema: dict[str, FeatureSpec],
    keep: Sequence[str],
    tfrecord_serialized: bool,
    allow_missing: bool | Sequence[str] = (),
    assembled: dict[str, list[str]] | None = None,
) -> dict[str, pa.DataType]:
    """The local engine's checks on the first rows of the first files (missing columns, unreadable headers)
    and on the columns of every other CSV and Parquet file (their headers: cheap), so a wrong file fails
    before the cluster starts, with the same message (Ray's CSV reader would fill a missing column with
    nulls). Returns the --keep column types of the first file (the local engine's output has those)."""
    for f in files[PRECHECK_FILES:]:
        if f.format in ("csv", "parquet"):
            check_columns(f, input_columns(f), schema, keep, allow_missing, assembled)
    keep_types: dict[str, pa.DataType] = {}
    for f in files[:PRECHECK_FILES]:
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


def _user_error(
    exc: BaseException,
    files: Sequence[InputFile],
    schema: dict[str, FeatureSpec],
    keep: Sequence[str],
    batch_size: int,
    tfrecord_serialized: bool,
    columns: dict[str, Any] | None = None,
) -> TfpredictError | None:
    """The TfpredictError behind a failed Ray job (raised in an actor, wrapped by Ray), or, when one of
    Ray's readers failed on bad data, the local engine's message for it (file, line, column). None: not
    the user's data; the caller re-raises the original."""
    found = find_tfpredict_error(exc)
    if found is not None:
        return found
    try:
        from ray.exceptions import RayError
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, RayError):
        return None
    try:
        for _ in read_inputs(
            files, schema, batch_size, keep, tfrecord_serialized=tfrecord_serialized, **(columns or {})
        ):
            pass
    except InputError as e:
        return e
    return None


def find_tfpredict_error(exc: BaseException) -> TfpredictError | None:
    """Our own error inside the exceptions Ray wraps around it (RayTaskError, UserCodeException, ...),
    as a plain instance of its class (so it pickles, prints and exits like one raised here)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, TfpredictError):
            plain = next(c for c in type(e).__mro__ if c.__module__.startswith("tfpredict"))
            return plain(getattr(e, "message", None) or str(e).splitlines()[-1])  # type: ignore[no-any-return]
        stack += [e.__context__, e.__cause__, getattr(e, "cause", None)]
    return None


__all__ = [
    "ActorStats",
    "ExportPackage",
    "PredictBatches",
    "RayPredictResult",
    "connect",
    "import_ray",
    "package_export",
    "predict_dataset",
    "predict_files",
]
