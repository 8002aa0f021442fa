"""The Spark engine: the batch job of `tfpredict predict --engine spark`, with the same Predictor.

    Spark's readers, one DataFrame per input file (CSV / JSON Lines as text, Parquet typed, TFRecord as bytes)
      -> mapInArrow(predict_partition): each Python worker loads the export once, predicts Arrow batches
      -> Spark's writers (Parquet / CSV / JSON Lines) into a hidden directory, renamed at the end

The export is shipped to the executors with SparkContext.addArchive (spark_export.py), so only the inputs and
the output need a path every node can reach. Output columns are the local engine's (engines/common.py).
This module is the job on the driver; spark_session.py starts Spark, spark_read.py reads the files,
spark_worker.py is what runs in the Python workers, spark_frames.py the DataFrame API (predict, predict_udf).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial, reduce
from pathlib import Path
from typing import Any

import numpy as np

from .. import errors
from ..errors import InputError, TfpredictError, UsageError
from ..features import Assemble
from ..io.files import InputFile, expand_inputs
from ..io.readers import input_columns, read_inputs
from ..predictor import DEFAULT_BATCH_SIZE, Predictor
from .common import check_inputs, check_output_directory, text_lists_schema
from .spark_export import ship_export
from .spark_frames import ModelPlan, job_schema, load_options, plan_model, worker_settings
from .spark_read import read_file, spark_schema
from .spark_session import INSTALL_HINT, import_pyspark, spark_session
from .spark_worker import WorkerStats, predict_partition, stats_accumulator, typed_columns

log = logging.getLogger(__name__)

#: Input files whose first rows the driver reads before starting (the others: their header / footer).
PRECHECK_FILES = 64


@dataclass
class SparkPredictResult:
    """What a Spark job did: rows written, wall seconds, where, and what each Python worker did."""

    rows: int
    seconds: float
    output: Path
    files: list[Path]
    workers: list[WorkerStats] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # where the seconds went, in order

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def executors(self) -> list[str]:
        return sorted({w.executor for w in self.workers if w.rows})

    def summary(self) -> str:
        return (
            f"{self.rows:,} rows in {self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s) "
            f"-> {self.output}/ ({len(self.files)} file{'s' if len(self.files) != 1 else ''})"
        )

    def worker_lines(self) -> list[str]:
        loads = sum(w.loads for w in self.workers)
        lines = [
            f"spark: {len(self.workers)} Python worker(s) on {len(self.executors)} executor(s), "
            f"{loads} export load(s)"
        ]
        if self.phases:
            lines.append("spark: seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items()))
        for w in sorted(self.workers, key=lambda w: (w.executor, w.pid)):
            lines.append(
                f"spark: executor {w.executor} ({w.where}) worker {w.pid}: {w.rows:,} rows, "
                f"{w.rows_per_second:,.0f} rows/s while busy, "
                f"export loaded {w.loads}x in {w.load_seconds:.1f} s, "
                f"busy {w.busy_seconds:.1f} s (first model call {w.first_call_seconds:.1f} s) "
                f"+ output to Spark {w.handoff_seconds:.1f} s"
            )
        return lines


def predict_files(
    export: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    master: str | None = None,
    executors: int | None = None,
    batch_size: int | None = None,
    signature: str | None = None,
    outputs: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    threads: int | None = None,
    inter_op_threads: int | None = None,
    xla: bool = False,
    shared_export: bool = False,
    quiet: bool = True,
    allow_missing: bool | Sequence[str] = (),
    assemble: Assemble | None = None,
) -> SparkPredictResult:
    """Predict every row of `inputs` with Spark and write a directory of files (Parquet, CSV or JSON Lines,
    from the directory's extension; Parquet without one) with the same columns as the local engine.

    master: a cluster (spark://, yarn, k8s://...; default local[*], or local[executors]); a SparkSession
    the caller already has is used as is. Bad input stops the job with an InputError naming the file and
    column; nothing appears at output_dir.
    """
    import_pyspark()
    started = time.perf_counter()
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    target, fmt = check_output_directory(output_dir, "spark")
    files = expand_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    keep = list(dict.fromkeys(keep))
    job = _plan_job(export, signature, outputs, files, keep, allow_missing, assemble)
    phases = {"driver: load export, check inputs": time.perf_counter() - started}
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        mark = time.perf_counter()
        with spark_session(master, executors, batch_size=batch_size, quiet=quiet) as spark:
            phases["start Spark"] = time.perf_counter() - mark
            mark = time.perf_counter()
            stats = stats_accumulator(spark)
            frame = _job_frame(
                spark, job, fmt, stats, batch_size, threads, inter_op_threads, xla, shared_export
            )
            _write(frame, fmt, tmp)
            workers = list(stats.value.values())
            phases["job: read, predict, write"] = time.perf_counter() - mark
            mark = time.perf_counter()
        phases["stop Spark"] = time.perf_counter() - mark
        written = _finish(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # after Spark stopped: no task writes there any more
        user_error = spark_user_error(exc, job, batch_size)
        if user_error is not None:
            raise user_error from None
        raise
    return SparkPredictResult(
        rows=sum(w.rows for w in workers),
        seconds=time.perf_counter() - started,
        output=target,
        files=written,
        workers=workers,
        phases=phases,
    )


@dataclass
class _Job:
    """What the driver learned before starting Spark: the model's plan, the files, the output schema."""

    plan: ModelPlan
    files: list[InputFile]
    keep: list[str]
    keep_types: dict[str, Any]
    sample: dict[str, np.ndarray] | None
    columns: dict[str, Any]  # allow_missing and assembled, as the local readers take them


def _plan_job(
    export: str | os.PathLike[str],
    signature: str | None,
    outputs: Sequence[str] | None,
    files: list[InputFile],
    keep: list[str],
    allow_missing: bool | Sequence[str],
    assemble: Assemble | None,
) -> _Job:
    """Load the export on the driver: a bad export, signature, output name or input file fails here, before
    Spark starts (its JVM takes seconds); an output of unknown rank gets its type from the first rows."""
    with Predictor.load(export, signature, intra_op_threads=1) as predictor:
        plan = plan_model(predictor, outputs, keep, assemble, input_columns(files[0]) if assemble else None)
        if plan.csv_lines:
            raise UsageError(
                "this export parses whole CSV lines itself (DecodeCSV); --engine spark feeds columns: "
                "use the local engine"
            )
        columns: dict[str, Any] = {"allow_missing": allow_missing, "assembled": plan.assembled}
        keep_types = check_inputs(
            files, plan.schema, keep, plan.tfrecord_serialized, PRECHECK_FILES, **columns
        )
        sample = _sample(predictor, plan, files, keep, columns) if plan.unknown_rank else None
    return _Job(plan, files, keep, keep_types, sample, columns)


def _sample(
    predictor: Predictor, plan: ModelPlan, files: list[InputFile], keep: list[str], columns: dict[str, Any]
) -> dict[str, np.ndarray] | None:
    """The outputs of the first rows of the first file that has any, predicted here."""
    for f in files:
        for chunk in read_inputs([f], plan.schema, 16, keep, tfrecord_serialized=False, **columns):
            if chunk.batch.num_rows == 0:
                continue
            try:
                feeds = predictor.convert(
                    typed_columns(chunk.batch, plan.schema),
                    allow_missing=columns["allow_missing"],
                    assemble=plan.assembled,
                )
            except InputError as exc:
                raise InputError(f"{f}: {exc.message}") from None
            return predictor.predict_feeds(feeds, outputs=plan.selected)
    return None


def _job_frame(
    spark: Any,
    job: _Job,
    fmt: str,
    stats: Any,
    batch_size: int,
    threads: int | None,
    inter_op_threads: int | None,
    xla: bool,
    shared_export: bool,
) -> Any:
    """The job as one DataFrame: each file read and predicted, the files' results in order (a union)."""
    schema = job_schema(job.plan, job.keep, job.keep_types, job.sample)
    ref = ship_export(spark, job.plan.export_dir, shared=shared_export)
    load = load_options(spark, job.plan.signature, threads, inter_op_threads, xla, batch_size)
    # A JSON line or a tf.Example may omit a feature (missing in that row); the driver checked the columns.
    lenient = any(f.format in ("jsonl", "tfrecord") for f in job.files)
    base = worker_settings(
        ref,
        job.plan,
        schema,
        job.keep,
        job.keep_types,
        load,
        True if lenient else job.columns["allow_missing"],
        text_lists=fmt == "csv",
    )
    out_schema = spark_schema(text_lists_schema(schema) if fmt == "csv" else schema)
    frames = []
    for f in job.files:
        df, source = read_file(spark, f, job.plan.schema, job.keep)
        settings = replace(base, source=source, path=str(f))
        frames.append(df.mapInArrow(partial(predict_partition, settings=settings, stats=stats), out_schema))
    return reduce(lambda a, b: a.union(b), frames)


def _write(frame: Any, fmt: str, path: Path) -> None:
    writer = frame.write.mode("errorifexists")
    if fmt == "parquet":
        writer.parquet(str(path))
    elif fmt == "csv":
        writer.option("header", True).option("escape", '"').csv(str(path))
    else:
        writer.option("ignoreNullFields", False).json(str(path))


def _finish(tmp: Path, target: Path) -> list[Path]:
    """Spark's checksum files out, then the directory renamed to the target: its data files, in order."""
    tmp.mkdir(exist_ok=True)
    for crc in tmp.glob(".*.crc"):
        crc.unlink()
    if target.exists():
        target.rmdir()  # checked empty before the job
    os.replace(tmp, target)
    return sorted(p for p in target.iterdir() if p.is_file() and not p.name.startswith((".", "_")))


# ------------------------------------------------------------------------------------------ errors

_OUR_ERROR = re.compile(r"tfpredict\.errors\.(\w+): (.+)")


def spark_user_error(exc: BaseException, job: _Job, batch_size: int) -> TfpredictError | None:
    """The user's error behind a failed Spark job: ours, raised in a Python worker (Spark carries its
    traceback as text), made more precise by the local reader when it names a file (a line number); or,
    when one of Spark's readers refused a file, the local engine's message for it. None: not the user's."""
    if isinstance(exc, TfpredictError):
        return exc
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return None
    found = find_tfpredict_error(str(exc))
    files = job.files
    if isinstance(found, InputError):
        named = [f for f in files if found.message.startswith(f"{f}: ")]
        files = named[:1]
        if not files:
            return found
    elif found is not None:
        return found
    elif not _is_spark_error(exc):
        return None
    try:
        for _ in read_inputs(files, job.plan.schema, batch_size, job.keep, **job.columns):
            pass
    except InputError as e:
        return e
    return found


def find_tfpredict_error(text: str) -> TfpredictError | None:
    """Our error in the text of a Spark exception (the Python worker's traceback it carries), as an instance
    of its class."""
    matches = _OUR_ERROR.findall(text)
    if not matches:
        return None
    name, message = matches[-1]
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, TfpredictError)):
        return None
    return cls(message.strip())


def _is_spark_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"Py4JJavaError", "PySparkException", "CapturedException", "Py4JError"})


__all__ = [
    "INSTALL_HINT",
    "PRECHECK_FILES",
    "SparkPredictResult",
    "find_tfpredict_error",
    "import_pyspark",
    "predict_files",
    "spark_user_error",
]
