"""Timings for `tfpredict doctor`: each stage alone on a sample of the user's data, the real pipelined job on
the same sample, and sweeps of the settings known to matter (batch size, threads, XLA, input format).

`measure()` is a sequence of phases over one `Run` (the settings, the loaded export, the sample and what was
measured so far); each phase takes its slice of the time `Budget` (budget.py) or is skipped and listed. The
pieces live apart: results.py (the value objects), budget.py, sample.py (reading and writing the sample),
rates.py (one stage timed alone, the pipelined job), trace.py (the model's ops by time).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..errors import InputError, TfpredictError
from ..features import AllowMissing, Assemble, resolve_assemble, source_schema
from ..io.readers import input_columns
from ..predictor import DEFAULT_BATCH_SIZE
from .budget import DEFAULT_SECONDS, Budget, timed_rate
from .context import Run, Threads, cpu_count, thread_fields, thread_settings, threads_label
from .rates import (
    MAX_PREPARED_BATCHES,
    batches_of,
    end_to_end,
    model_rate,
    output_schema,
    per_row_rate,
    write_rate,
)
from .results import Measurements, OpTime, Point, Stage
from .sample import (
    MAX_SAMPLE_BYTES,
    MAX_SAMPLE_ROWS,
    Sample,
    Scratch,
    input_files,
    read_rate,
    read_sample,
    write_sample_file,
)
from .trace import OP_CATEGORIES, trace_ops

if TYPE_CHECKING:
    from ..predictor import Feeds

__all__ = [
    "BATCH_SIZES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SECONDS",
    "MAX_PREPARED_BATCHES",
    "MAX_SAMPLE_BYTES",
    "MAX_SAMPLE_ROWS",
    "OP_CATEGORIES",
    "Budget",
    "Measurements",
    "OpTime",
    "Point",
    "Sample",
    "Scratch",
    "Stage",
    "batches_of",
    "cpu_count",
    "end_to_end",
    "input_files",
    "measure",
    "model_rate",
    "output_schema",
    "per_row_rate",
    "read_rate",
    "read_sample",
    "thread_settings",
    "timed_rate",
    "trace_ops",
    "write_rate",
    "write_sample_file",
]

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 32, 256, 1024, 4096, 8192, 16384, 65536, 262144)
#: One pass of the pipelined job should take about this share of the budget (at least one batch).
E2E_SHARE = 0.03

IN_LABELS = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines", "tfrecord": "TFRecord"}


def start_run(
    export: str | os.PathLike[str],
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    seconds: float,
    signature: str | None,
    output_format: str,
    batch_size: int,
    progress: Callable[[str], None] | None,
    allow_missing: AllowMissing,
    assemble: Assemble | None,
    tags: list[str] | None = None,
) -> Run:
    """Find the input files and load the export; the budget's slices are fractions of what is left then."""
    from ..predictor import Predictor

    budget = Budget(seconds)
    say = progress or (lambda text: log.info("%s", text))
    files = input_files(data)
    assembled = resolve_assemble(assemble, input_columns(files[0]) if assemble else None)
    columns: dict[str, Any] = {"allow_missing": allow_missing, "assembled": assembled}
    say("loading the export")
    predictor = Predictor.load(export, signature, allow_missing=allow_missing, assemble=assembled, tags=tags)
    budget.rebase()
    schema = source_schema(predictor.inputs, assembled)
    return Run(
        export,
        output_format,
        batch_size,
        budget,
        say,
        files,
        columns,
        predictor,
        schema,
        files[0].format,
        cpu_count(),
    )


def probe(run: Run) -> None:
    """The model's cost per row on the first rows: it says which batch sizes are cheap enough to warm up."""
    run.say("probing the first rows")
    head = read_sample(run.files, run.schema, 1024, 1, 0.0, run.budget.slice(0.05), columns=run.columns)
    if not head.rows:
        raise InputError(f"{run.files[0]}: no rows to measure")
    feeds = run.predictor.convert(head.table())
    run.predictor.predict_feeds(feeds)
    start = time.perf_counter()
    run.predictor.predict_feeds(feeds)
    run.model_cost = (time.perf_counter() - start) / head.rows


def measure_read_convert_model(run: Run, rows: int | None) -> None:
    """Reading, conversion and the model, each alone at the default batch size."""
    keep = MAX_SAMPLE_ROWS if rows is None else min(rows, MAX_SAMPLE_ROWS)
    label = IN_LABELS[run.fmt_in]
    run.say(f"reading {label}")
    budget = run.budget
    sample = read_sample(
        run.files,
        run.schema,
        run.batch_size,
        keep,
        budget.slice(0.04),
        budget.slice(0.1),
        columns=run.columns,
    )
    run.sample = sample
    run.stages = {"read": Stage("read", f"read {label}", *sample.steady_rate())}
    run.stages["read"].startup_seconds = sample.startup_seconds

    run.say("feature conversion")
    run.feeds = []
    convert_rows, convert_seconds, slice_ = 0, 0.0, budget.slice(0.03)
    for chunk in sample.chunks:
        start = time.perf_counter()
        run.feeds.append(run.predictor.convert(chunk.batch))
        convert_seconds += time.perf_counter() - start
        convert_rows += chunk.num_rows
        if convert_seconds >= slice_:
            break
    run.stages["convert"] = Stage("convert", "feature conversion", convert_rows, convert_seconds)

    run.say("the model alone")
    run.outputs = []
    model_rows, model_seconds, slice_ = 0, 0.0, budget.slice(0.04)
    for f in itertools.cycle(run.feeds):
        start = time.perf_counter()
        out = run.predictor.predict_feeds(f)
        model_seconds += time.perf_counter() - start
        model_rows += f.num_rows
        if len(run.outputs) < min(len(run.feeds), 8):
            run.outputs.append(out)
        if model_seconds >= slice_:
            break
    label = f"model (batch {min(run.batch_size, sample.rows):,})"
    run.stages["model"] = Stage("model", label, model_rows, model_seconds)


def measure_write(run: Run) -> float:
    """Writing alone, then each stage's share of the sum of the four; returns that sum (seconds per row)."""
    run.say("writing")
    w_rows, w_seconds = write_rate(
        run.predictor, run.outputs, run.tmp, run.output_format, run.budget.slice(0.02)
    )
    run.stages["write"] = Stage("write", f"write {run.output_format}", w_rows, w_seconds)
    per_row_s = {k: 1.0 / st.rows_per_s for k, st in run.stages.items() if st.rows_per_s > 0}
    total = sum(per_row_s.values())
    for k, st in run.stages.items():
        st.share = per_row_s.get(k, 0.0) / total if total > 0 else 0.0
    return total


def first_pipelined_run(run: Run, seconds_per_row: float, budget_seconds: float) -> None:
    """The pipelined job at the defaults on a sample sized so one pass takes ~E2E_SHARE of the budget."""
    budget, sample = run.budget, run.sample
    pass_rows = int(E2E_SHARE * budget.usable / max(seconds_per_row, 1e-12))
    sample.truncate(max(pass_rows, run.batch_size))
    run.table = sample.table()
    run.say(f"the pipelined job on {sample.rows:,} rows")
    sample_file = write_sample_file(sample, run.tmp, run.fmt_in) or write_sample_file(
        sample, run.tmp, "parquet"
    )
    assert sample_file is not None
    run.sample_file = sample_file
    run.e2e_min = 0.02 * budget.usable
    run.e2e_rows, run.e2e_seconds = end_to_end(
        run.predictor, sample_file, run.tmp, run.output_format, run.batch_size, run.e2e_min
    )
    run.stages["end_to_end"] = Stage("end_to_end", "end to end (pipelined)", run.e2e_rows, run.e2e_seconds)
    run.e2e_pass = max(run.e2e_seconds, run.e2e_min)
    run.m = Measurements(
        export=str(run.predictor.export_dir),
        data=", ".join(str(f.path) for f in run.files),
        input_format=run.fmt_in,
        output_format=run.output_format,
        signature=run.predictor.signature,
        model_path=run.predictor.path,
        cpus=run.cpus,
        sample_rows=sample.rows,
        file_exhausted=sample.exhausted,
        batch_size=run.batch_size,
        stages=run.stages,
        skipped=run.skipped,
        budget=budget_seconds,
    )


def sweep_batch_sizes(run: Run) -> None:
    """The model alone at batch 1, 32, 256, ... until rows/s stops rising; keeps the best one's feeds."""
    run.say("batch size sweep")
    predictor, budget, m = run.predictor, run.budget, run.m
    best_rate, best_batch = 0.0, min(run.batch_size, run.sample.rows)
    prepared: dict[int, list[Feeds]] = {}
    sizes = [b for b in BATCH_SIZES if b <= run.sample.rows] or [run.sample.rows]
    for b in sizes:
        if len(m.batch_sweep) >= 2 and not budget.allows(0.55):  # 1 and 32 always (cheap)
            run.skipped.append(f"batch sizes from {b:,} (time budget)")
            break
        prepared[b] = [predictor.convert(t) for t in batches_of(run.table, b)]
        slice_ = budget.slice(0.015)
        n, s = model_rate(predictor, prepared[b], slice_, warmup=run.warm(b, slice_))
        rate = n / s
        m.batch_sweep.append(Point({"batch_size": b}, rate))
        if rate > best_rate * 1.02:
            best_rate, best_batch = rate, b
        elif b >= 1024:
            break  # rows/s stopped rising
        if b != best_batch:
            prepared.pop(b, None)
    if best_batch not in prepared:
        prepared[best_batch] = [predictor.convert(t) for t in batches_of(run.table, best_batch)]
    run.best_feeds = prepared[best_batch]
    if not best_rate:
        n, s = model_rate(predictor, run.best_feeds, budget.slice(0.015), warmup=False)
        best_rate = n / s
    run.best_rate, run.best_batch = best_rate, best_batch


def trace_model(run: Run) -> None:
    """Inside the model: one large batch, traced (a bonus: a failed trace is listed, never raised)."""
    run.say("tracing the model's ops")
    big = max(run.best_batch, min(DEFAULT_BATCH_SIZE, run.sample.rows))
    feeds = run.best_feeds[0] if big == run.best_batch else run.predictor.convert(run.table.slice(0, big))
    try:
        run.m.top_ops, run.m.op_categories = trace_ops(run.predictor, feeds)
    except Exception as e:  # noqa: BLE001 - a trace is a bonus; never fail the diagnosis for it
        log.info("op trace failed: %s", e)
        run.skipped.append(f"op trace ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})")


def measure_per_row(run: Run) -> None:
    """The naive pattern: one predict() per row."""
    run.say("per-row prediction")
    n, s = per_row_rate(run.predictor, run.table, run.budget.slice(0.015))
    run.m.per_row = Point({"batch_size": 1, "mode": "predict() per row"}, n / s)


def sweepthread_fields(run: Run) -> None:
    """The model alone at the best batch size in a new session per thread setting."""
    run.say("thread sweep")
    sweep = run.m.thread_sweep
    sweep.append(Point(thread_fields(None, None), run.best_rate, "TensorFlow's default"))
    run.best_pair, run.best_pair_rate = (None, None), run.best_rate
    for intra, inter in thread_settings(run.cpus)[1:]:
        if not run.budget.allows(0.45):
            run.skipped.append(f"threads {intra}/{inter} (time budget)")
            continue
        p = run.load(intra, inter)
        try:
            p.predict_feeds(run.best_feeds[0])  # a new session's first run optimizes the graph
            n, s = model_rate(p, run.best_feeds, run.budget.slice(0.015), warmup=False)
        finally:
            p.close()
        sweep.append(Point(thread_fields(intra, inter), n / s))
        if n / s > run.best_pair_rate:
            run.best_pair, run.best_pair_rate = (intra, inter), n / s


def try_xla(run: Run) -> None:
    """The model alone with XLA at the best thread setting (an export XLA cannot compile is a finding)."""
    if not run.budget.allows(0.4):
        run.skipped.append("XLA (time budget)")
        return
    run.say("XLA")
    settings = thread_fields(*run.best_pair)
    run.m.xla_sweep.append(Point({"xla": False, **settings}, run.best_pair_rate))
    try:
        p = run.load(*run.best_pair, xla=True)
        try:
            p.predict_feeds(run.best_feeds[0])  # compiles
            n, s = model_rate(p, run.best_feeds, run.budget.slice(0.02), warmup=False)
            run.m.xla_sweep.append(Point({"xla": True, **settings}, n / s))
        finally:
            p.close()
    except Exception as e:  # noqa: BLE001 - an export XLA cannot compile is a finding, not a failure
        note = f"cannot compile: {str(e).splitlines()[0][:120]}"
        run.m.xla_sweep.append(Point({"xla": True, **settings}, None, note))


def sweep_formats(run: Run) -> None:
    """The same sample read as CSV, Parquet, JSON Lines, and from memory (no reading: conversion + model)."""
    run.say("input formats")
    sweep = run.m.format_sweep
    for fmt in dict.fromkeys([run.fmt_in, "csv", "parquet", "jsonl"]):
        if fmt == "tfrecord":
            continue
        if not run.budget.allows(0.33):
            run.skipped.append(f"reading the sample as {fmt} (time budget)")
            continue
        path = (
            run.sample_file
            if run.sample_file.name.startswith(f"sample.{fmt}")
            else write_sample_file(run.sample, run.tmp, fmt)
        )
        settings = {"format": fmt, "step": "read"}
        if path is None:
            sweep.append(Point(settings, None, "the sample cannot be written in this format"))
            continue
        try:
            n, s = read_rate(path, run.schema, run.batch_size, run.columns)
        except TfpredictError as e:  # e.g. a value JSON cannot carry the way the model wants it
            sweep.append(Point(settings, None, f"cannot read back: {e}"))
            continue
        sweep.append(Point(settings, n / s))
    if run.budget.allows(0.3):

        def predict_table(t: pa.Table) -> int:
            run.predictor.predict(t)
            return t.num_rows

        batches = batches_of(run.table, run.batch_size, limit=8)
        n, s = timed_rate(predict_table, batches, run.budget.slice(0.015))
        sweep.append(
            Point({"format": "memory", "step": "predict"}, n / s, "Predictor.predict on an Arrow table")
        )


def run_candidate(run: Run, b: int, pair: Threads, path: Path | None = None) -> float | None:
    """One pipelined run at batch b and thread setting pair (None when it no longer fits the budget)."""
    path = path or run.sample_file
    budget = run.budget
    if not budget.allows(0.02) or budget.left < 1.5 * run.e2e_pass + 0.02 * budget.usable:
        run.skipped.append(
            f"pipelined run at batch {b:,}, {threads_label(pair)} on {path.suffix} (time budget)"
        )
        return None
    if pair not in run.loaded:
        run.loaded[pair] = run.load(*pair)
        run.loaded[pair].predict_feeds(run.best_feeds[0])  # first run of a session optimizes the graph
    n, s = end_to_end(run.loaded[pair], path, run.tmp, run.output_format, b, run.e2e_min)
    rate = n / s
    if path == run.sample_file:
        run.done[(b, pair)] = max(rate, run.done.get((b, pair), 0.0))
    return rate


def pipelined_candidates(run: Run) -> None:
    """The pipelined job at candidate settings (what `tfpredict predict` will do), default first.

    Round one runs each candidate once; round two re-runs the default and the two best, and each keeps its
    best run: on a shared machine a run can lose a second to a neighbour, never gain one.
    """
    run.say("the pipelined job at candidate settings")
    default = (run.batch_size, (None, None))
    run.done[default] = run.e2e_rows / run.e2e_seconds
    run.loaded[(None, None)] = run.predictor
    try:
        for b in dict.fromkeys([run.best_batch, 2 * run.batch_size, 4 * run.best_batch]):
            if b != run.batch_size and b <= max(run.sample.rows, run.batch_size):
                run_candidate(run, b, (None, None))
        e2e_batch = max((k for k in run.done if k[1] == (None, None)), key=lambda k: run.done[k])[0]
        ranked = sorted(run.m.thread_sweep[1:], key=lambda p: -(p.rows_per_s or 0))
        pairs = [(p.settings["threads"], p.settings["inter_op_threads"]) for p in ranked[:1]]
        for pair in dict.fromkeys([*pairs, (1, 1)]):
            if (e2e_batch, pair) not in run.done:
                run_candidate(run, e2e_batch, pair)
        top = sorted(run.done, key=lambda k: -run.done[k])[:2]
        for b, pair in dict.fromkeys([default, *top]):
            run_candidate(run, b, pair)
        # The job at the defaults, as it ran at its best (its first run may have paid for warm-ups).
        run.stages["end_to_end"].seconds = run.e2e_rows / run.done[default]
        for (b, pair), rate in run.done.items():
            run.m.end_to_end_sweep.append(Point({"batch_size": b, **thread_fields(*pair)}, rate))
        parquet = run.tmp / "sample.parquet"
        if run.fmt_in != "parquet" and parquet.exists():
            b, pair = max(run.done, key=lambda k: run.done[k])
            parquet_rate = run_candidate(run, b, pair, parquet)
            if parquet_rate is not None:
                settings = {
                    "format": "parquet",
                    "step": "end_to_end",
                    "batch_size": b,
                    **thread_fields(*pair),
                }
                run.m.format_sweep.append(Point(settings, parquet_rate))
    finally:
        for p in run.loaded.values():
            p.close()


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
    tags: list[str] | None = None,
) -> Measurements:
    """Measure every stage and sweep on a sample of `data`, within about `seconds` of wall time.

    Plan (fractions of the budget left after loading): reading 4-10%, conversion 3%, the model 4%, writing
    2%, batch-size points 1.5% each, thread settings and XLA ~2% each, per-row 1.5%, formats ~5%, and the
    pipelined job ~3% per run (default settings, up to five candidates, re-runs of the best). A phase that
    no longer fits is skipped and listed in `skipped`. allow_missing, assemble: as `tfpredict predict`
    takes them (a missing column is an error before anything is measured). tags: the meta graph's tag set
    (default: the serving one).
    """
    run = start_run(
        export, data, seconds, signature, output_format, batch_size, progress, allow_missing, assemble, tags
    )
    probe(run)
    measure_read_convert_model(run, rows)
    with Scratch() as tmp:
        run.tmp = tmp
        seconds_per_row = measure_write(run)
        first_pipelined_run(run, seconds_per_row, seconds)
        sweep_batch_sizes(run)
        trace_model(run)
        measure_per_row(run)
        sweepthread_fields(run)
        try_xla(run)
        sweep_formats(run)
        pipelined_candidates(run)
    run.m.seconds = run.budget.used
    return run.m
