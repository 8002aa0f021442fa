"""The Ray Data engine: the batch job of `tfpredict predict` on a Ray cluster, with the same Predictor.

    Ray's readers (CSV / Parquet / JSON Lines / TFRecord, typed by the model's feature schema)
      -> map_batches(PredictBatches) on an actor pool: each actor loads the export once, predicts blocks
      -> Ray's writers (Parquet / CSV / JSON Lines) into a hidden directory, renamed to the target on success

The export travels through Ray's object store (a tar of the version directory, unpacked once per node), so
only the inputs and the output need a path every node can reach. Output columns are the local engine's:
`--keep` columns, then one column per output with the types `io.writers` gives them (engines/common.py).

This module is the job on the driver; ray_export.py ships the export, ray_actors.py holds what runs on the
actors, ray_datasets.py builds the Datasets (reads and the prediction step).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import InputError, TfpredictError, UsageError
from ..features import Assemble, FeatureSpec, resolve_assemble, source_schema
from ..io.files import InputFile, expand_inputs
from ..io.readers import input_columns, read_inputs
from ..predictor import DEFAULT_BATCH_SIZE, CallPath, Predictor
from .common import check_inputs, check_keep, check_output_directory, selected_outputs
from .ray_actors import PATH_COLUMN, ActorStats, PredictBatches, StatsCollector
from .ray_datasets import IO_TASK_CPUS, plan_workers, predict_dataset, read_files
from .ray_export import INSTALL_HINT, ExportPackage, import_ray, package_export

log = logging.getLogger(__name__)

#: Object store of a local cluster we start ourselves: batches stream through it, a few at a time.
LOCAL_OBJECT_STORE_BYTES = 512 << 20
#: How long the job waits for its actors to start (a new process importing TensorFlow and loading the export).
ACTOR_START_SECONDS = 600
#: Roughly the bytes of input per Ray block (Ray's readers cut files into blocks of ~128 MiB of memory).
BLOCK_BYTES = 64 << 20
#: Input files whose columns the driver checks before starting (a header / footer / first block each).
PRECHECK_FILES = 64


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
    return check_output_directory(path, "ray")


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
    job = _plan_job(export, signature, outputs, files, keep, allow_missing, assemble, batch_size)

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
        ds = _dataset(job, fmt, stats, workers, threads, inter_op_threads, xla, allow_missing)
        actors = _write_atomically(ds, fmt, target, job, stats)
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


@dataclass
class _Job:
    """What the driver learned before any cluster work: the signature, columns and outputs of the job."""

    files: list[InputFile]
    keep: list[str]
    batch_size: int
    signature: str
    export_dir: Path
    schema: dict[str, FeatureSpec]
    selected: list[str]
    assembled: dict[str, list[str]]
    tfrecord_serialized: bool
    columns: dict[str, Any]  # allow_missing and assembled, as the readers take them
    keep_types: dict[str, pa.DataType] = field(default_factory=dict)


def _plan_job(
    export: str | os.PathLike[str],
    signature: str | None,
    outputs: Sequence[str] | None,
    files: list[InputFile],
    keep: list[str],
    allow_missing: bool | Sequence[str],
    assemble: Assemble | None,
    batch_size: int,
) -> _Job:
    """Load the export once on the driver too: a bad export, signature, output name or input file fails
    here, before any cluster work."""
    with Predictor.load(export, signature, intra_op_threads=1) as predictor:
        sig = predictor.signature
        assembled = resolve_assemble(assemble, input_columns(files[0]) if assemble else None)
        selected = selected_outputs(list(predictor.signatures[sig].outputs), outputs, sig)
        check_keep(keep, selected)
        job = _Job(
            files,
            keep,
            batch_size,
            sig,
            predictor.export_dir,
            source_schema(predictor.inputs_for(sig), assembled),
            selected,
            assembled,
            tfrecord_serialized=predictor.path_for(sig) != CallPath.TENSORS,
            columns={"allow_missing": allow_missing, "assembled": assembled},
        )
        job.keep_types = check_inputs(
            files, job.schema, keep, job.tfrecord_serialized, PRECHECK_FILES, **job.columns
        )
    return job


def _dataset(
    job: _Job,
    fmt: str,
    stats: Any,
    workers: int,
    threads: int | None,
    inter_op_threads: int | None,
    xla: bool,
    allow_missing: bool | Sequence[str],
) -> Any:
    """The job's Dataset: its files read by Ray's readers, then predicted on the actor pool."""
    ds = read_files(
        job.files,
        job.schema,
        job.keep,
        include_paths=PATH_COLUMN not in job.schema and PATH_COLUMN not in job.keep,
    )
    return predict_dataset(
        ds,
        package_export(job.export_dir),
        signature=job.signature,
        outputs=job.selected,
        keep=job.keep,
        batch_size=job.batch_size,
        workers=workers,
        threads=threads,
        inter_op_threads=inter_op_threads,
        xla=xla,
        text_lists=fmt == "csv",
        keep_types=job.keep_types,
        stats=stats,
        # A JSON line or a tf.Example may omit a feature (missing in that row), and a Ray block of them
        # then lacks the column: the driver checked the files' columns, the actors only convert.
        allow_missing=True if any(f.format in ("jsonl", "tfrecord") for f in job.files) else allow_missing,
        assembled=job.assembled,
    )


def _write_atomically(ds: Any, fmt: str, target: Path, job: _Job, stats: Any) -> list[ActorStats]:
    """Run the Dataset into a hidden directory beside target, renamed to it once every file is written
    (then what each actor did); a failure leaves nothing behind and is raised as the user's error when it
    is one."""
    ray = import_ray()
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _write(ds, fmt, tmp, job.batch_size)
        tmp.mkdir(exist_ok=True)  # no rows (header-only inputs): an empty directory, not a missing one
        actors: list[ActorStats] = ray.get(stats.summary.remote())
        if target.exists():
            target.rmdir()  # checked empty above
        os.replace(tmp, target)
        return actors
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        user_error = _user_error(
            exc, job.files, job.schema, job.keep, job.batch_size, job.tfrecord_serialized, job.columns
        )
        if user_error is not None:
            raise user_error from None
        raise


def _write(ds: Any, fmt: str, path: Path, batch_size: int) -> None:
    # Files of at least this many rows: a few files per actor rather than one per batch.
    options = {"min_rows_per_file": max(batch_size, 1 << 17), "ray_remote_args": {"num_cpus": IO_TASK_CPUS}}
    if fmt == "parquet":
        ds.write_parquet(str(path), **options)
    elif fmt == "csv":
        ds.write_csv(str(path), **options)
    else:
        ds.write_json(str(path), **options)


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
    "INSTALL_HINT",
    "ActorStats",
    "ExportPackage",
    "PredictBatches",
    "RayPredictResult",
    "connect",
    "import_ray",
    "package_export",
    "plan_workers",
    "predict_dataset",
    "predict_files",
    "read_files",
]
