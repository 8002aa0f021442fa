"""Batch prediction over files: read -> convert -> model -> write, overlapped in threads, in input order.

    reader thread ──q──> convert thread ──q──> model thread(s) ──q──> caller's thread (reorder, write)

Each stage runs in its own thread with a small bounded queue in front of the next, so at most a few batches
are in flight and memory does not grow with the input. pyarrow's readers and TensorFlow release the GIL, so
the stages really overlap. Batches carry a sequence number; the writer puts them back in input order.
The output goes to a temporary file renamed on success (nothing half-written, also on Ctrl-C).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import features as F
from .errors import InputError, UsageError
from .io.lines import read_csv_lines
from .io.readers import Chunk, InputFile, expand_inputs, input_columns, read_inputs, split_bad_rows
from .io.writers import (
    BadRowsWriter,
    check_output_path,
    open_writer,
    output_type,
    outputs_to_batch,
    write_atomically,
)

if TYPE_CHECKING:
    from .predictor import Predictor

log = logging.getLogger(__name__)

#: Rows per model call. Measured on a 2-core machine with a 256/128/64 DNNClassifier (benchmarks/batch.py):
#: rows/s rises steeply up to ~4k rows and is flat beyond 8k, while memory in flight grows with it.
DEFAULT_BATCH_SIZE = 8192
QUEUE_DEPTH = 3  # batches waiting between two stages
#: Model calls in flight at once. One call of a small dense model keeps ~1 of 2 cores busy (its ops are too
#: small to split well); two overlapping calls fill the gaps: +5-50% rows/s on bench_dnn (best of 4-5 rounds).
MODEL_WORKERS = 2
_POLL = 0.1  # seconds a blocked stage waits before checking whether the run was stopped


@dataclass
class PredictResult:
    """What a batch prediction did: rows written, wall seconds, rejected rows, where it went."""

    rows: int
    seconds: float
    output: Path
    bad_rows: int = 0
    bad_rows_path: Path | None = None
    files: list[Path] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # busy time of each stage (not waiting)
    xla_clusters: int | None = None  # with xla=True: XLA clusters the model ran (0: nothing compiled)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        rate = f"{self.rows_per_second:,.0f} rows/s"
        text = f"{self.rows:,} rows in {self.seconds:.1f} s ({rate}) -> {self.output}"
        if self.bad_rows:
            text += f"; {self.bad_rows:,} bad rows -> {self.bad_rows_path}"
        return text


class _Stopped(Exception):
    """Raised inside a stage when another stage failed or the run was interrupted."""


@dataclass
class _Item:
    seq: int
    chunk: Chunk
    feeds: Any = None
    outputs: dict[str, np.ndarray] | None = None


class _Run:
    """Shared state of one pipelined run: the stop flag and the first error any stage hit."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self.busy: dict[str, float] = {}

    def timed(self, stage: str, started: float) -> None:
        self.busy[stage] = self.busy.get(stage, 0.0) + time.perf_counter() - started

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def put(self, q: queue.Queue[Any], item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue
        raise _Stopped


_DONE = object()


def _thread(run: _Run, name: str, target: Callable[[], None]) -> threading.Thread:
    def body() -> None:
        try:
            target()
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread and re-raised there
            run.fail(exc)

    t = threading.Thread(target=body, name=f"tfpredict-{name}", daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------------------------------------- the stages


class _Model:
    """How one run calls the predictor: converted feeds, or serialized tf.Examples straight from TFRecord."""

    def __init__(
        self,
        predictor: Predictor,
        signature: str,
        outputs: list[str] | None,
        allow_missing: F.AllowMissing = (),
        assembled: dict[str, list[str]] | None = None,
    ) -> None:
        self.predictor = predictor
        self.signature = signature
        self.outputs = outputs
        self.features = predictor.inputs_for(signature)
        self.allow_missing = allow_missing
        self.assembled = assembled or {}
        self.schema = F.source_schema(self.features, self.assembled)  # the columns the readers read
        self.path = predictor.path_for(signature)
        self.serialized_input = _serialized_input(predictor, signature, self.path)
        self.csv_lines = predictor.csv_spec_for(signature)  # a receiver of whole CSV lines: fed as written

    def convert(self, chunk: Chunk) -> Any:
        if chunk.serialized is not None:
            return None
        return self.convert_batch(chunk.batch)

    def convert_batch(self, batch: pa.RecordBatch) -> Any:
        return self.predictor.convert(
            batch, signature=self.signature, allow_missing=self.allow_missing, assemble=self.assembled
        )

    def table(self, batch: pa.RecordBatch) -> F.Table:
        """Rows with the assembled inputs built (what the predictor's own methods take)."""
        return F.input_table(batch, self.features, self.allow_missing, self.assembled)

    def predict(self, chunk: Chunk, feeds: Any) -> dict[str, np.ndarray]:
        if chunk.serialized is not None:
            assert self.serialized_input is not None
            return self.predictor.run(
                {self.serialized_input: chunk.serialized}, signature=self.signature, outputs=self.outputs
            )
        try:
            return self.predictor.predict_feeds(feeds, outputs=self.outputs)
        except InputError as e:
            record = _DECODE_CSV_RECORD.search(e.message) if self.csv_lines is not None else None
            if record is None:
                raise
            i = int(record.group(1))
            why = _DECODE_CSV_RECORD.sub("", e.message.split("rejected the input: ", 1)[-1])
            raise InputError(
                f"{chunk.file}, data line {chunk.first_row + i + 1}: the export's DecodeCSV "
                f"({len(self.csv_lines.dtypes)} columns) refused it: {why}"
            ) from None

    def read(
        self, files: Sequence[InputFile], batch_size: int, keep: Sequence[str], **options: Any
    ) -> Iterator[Chunk]:
        """The input chunks: a CSV file's raw lines for a CSV-line receiver (unless its header names the
        line input: then that column holds the lines), else the readers' columns."""
        for file in files:
            if (
                self.csv_lines is not None
                and file.format == "csv"
                and self.csv_lines.line_input not in input_columns(file)
            ):
                yield from read_csv_lines(file, self.csv_lines, batch_size)
            else:
                yield from read_inputs([file], self.schema, batch_size, keep, **options)


def _serialized_input(predictor: Predictor, signature: str, path: str) -> str | None:
    """The signature input that takes serialized tf.Examples, when the export parses Examples itself."""
    if path == "tensors":
        return None
    return predictor.serialized_input_for(signature)


_ROW_PREFIX = re.compile(r"^Row \d+:\s*")
_DECODE_CSV_RECORD = re.compile(r" in record (\d+)")


def _first_bad_row(model: _Model, chunk: Chunk) -> tuple[int, str]:
    """Bisect a chunk whose conversion failed down to its first failing row (and that row's message)."""
    lo, hi = 0, chunk.batch.num_rows
    message = ""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            model.convert_batch(chunk.batch.slice(lo, mid - lo))
        except InputError as e:
            message = e.message
            hi = mid
            continue
        lo = mid
    try:
        model.convert_batch(chunk.batch.slice(lo, 1))
    except InputError as e:
        message = e.message
    return lo, _ROW_PREFIX.sub("", message)


def _bad_rows_of(model: _Model, chunk: Chunk, start: int, stop: int, found: dict[int, str]) -> None:
    """All rows in [start, stop) whose conversion fails, with their messages (bisection)."""
    try:
        model.convert_batch(chunk.batch.slice(start, stop - start))
        return
    except InputError as e:
        if stop - start == 1:
            found[start] = _ROW_PREFIX.sub("", e.message)
            return
    mid = (start + stop) // 2
    _bad_rows_of(model, chunk, start, mid, found)
    _bad_rows_of(model, chunk, mid, stop, found)


def _convert_checked(model: _Model, chunk: Chunk, lenient: bool) -> tuple[Chunk, Any]:
    """Convert a chunk; on bad data name the file and line, or (lenient) set the bad rows aside."""
    try:
        return chunk, model.convert(chunk)
    except InputError as first:
        if chunk.batch.num_rows == 0:
            raise InputError(f"{chunk.file}: {first.message}") from None
        if not lenient:
            i, message = _first_bad_row(model, chunk)
            if message and "Missing column" not in message:
                raise InputError(f"{chunk.where(i)}: {message}") from None
            raise InputError(f"{chunk.file}: {first.message}") from None
        found: dict[int, str] = {}
        _bad_rows_of(model, chunk, 0, chunk.batch.num_rows, found)
        if not found:  # the whole batch fails but no single row does (e.g. a missing column)
            raise InputError(f"{chunk.file}: {first.message}") from None
        mask = np.zeros(chunk.batch.num_rows, dtype=bool)
        mask[list(found)] = True
        chunk = split_bad_rows(chunk, mask, found)
        return chunk, (model.convert(chunk) if chunk.batch.num_rows else None)


# ---------------------------------------------------------------------------------------------- the run


def predict_files(
    export: str | os.PathLike[str] | Predictor,
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    signature: str | None = None,
    outputs: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    batch_size: int | None = None,
    threads: int | None = None,
    inter_op_threads: int | None = None,
    xla: bool = False,
    bad_rows: str | os.PathLike[str] | None = None,
    model_workers: int = MODEL_WORKERS,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[list[InputFile]], None] | None = None,
    allow_missing: F.AllowMissing | None = None,
    assemble: F.Assemble | None = None,
) -> PredictResult:
    """Predict every row of `inputs` (CSV, Parquet, JSON Lines, TFRecord files, globs or directories) with
    an export and write one row per input row to `output` (.parquet, .csv or .jsonl), in input order.

    keep: input columns (ids) copied to the output before the predictions. bad_rows: a file for rows that
    cannot be converted (with the reason); without it the first bad row stops the run with an InputError.
    threads / inter_op_threads: TensorFlow's intra-op and inter-op pools (default: TF's choice, all cores).
    model_workers: model calls in flight at once (outputs still come back in input order).
    progress(rows) is called after each written batch.
    allow_missing: columns a file may lack (True: any), each then missing in every row; without it a
    file that lacks a column the model reads fails before any prediction. assemble: {input: source
    columns} ("f0:f63" is a range in the first file's column order). Both default to the Predictor's.
    """
    started = time.perf_counter()
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    if model_workers < 1:
        raise UsageError(f"model workers must be at least 1, not {model_workers}")
    out_path = check_output_path(output)
    bad_path = Path(bad_rows) if bad_rows is not None else None
    if bad_path is not None:
        check_output_path(bad_path.with_suffix(".csv"))
        if bad_path.resolve() == out_path.resolve():
            raise UsageError("--bad-rows must name a different file than the output")
    files = expand_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    keep = list(dict.fromkeys(keep))
    if any(f.path.resolve() == out_path.resolve() for f in files):
        raise UsageError(f"{out_path} is also an input; write the predictions to another file")

    predictor = (
        export
        if not isinstance(export, (str, os.PathLike))
        else _load(export, signature, threads, inter_op_threads, xla)
    )
    owned = predictor is not export
    threads_: list[threading.Thread] = []
    try:
        wanted = predictor.assemble if assemble is None else assemble
        model = _Model(
            predictor,
            signature or predictor.signature,
            list(outputs) if outputs else None,
            predictor.allow_missing if allow_missing is None else allow_missing,
            F.resolve_assemble(wanted, input_columns(files[0]) if wanted else None),
        )
        available = list(predictor.signatures[model.signature].outputs)
        selected = list(outputs) if outputs else available
        unknown = [o for o in selected if o not in available]
        if unknown:
            raise UsageError(
                f"unknown output(s) {', '.join(unknown)}; the signature {model.signature!r} has: "
                f"{', '.join(available)}"
            )
        if (
            model.csv_lines is not None
            and keep
            and any(f.format == "csv" and model.csv_lines.line_input not in input_columns(f) for f in files)
        ):
            raise UsageError(
                f"--keep needs named columns; the signature {model.signature!r} takes whole CSV lines "
                f"(its input {model.csv_lines.line_input!r}), which are fed as they are"
            )
        clash = [k for k in keep if k in selected]
        if clash:
            raise UsageError(f"--keep column(s) {', '.join(clash)} have the same name as model outputs")
        if on_start is not None:
            on_start(files)

        tfrecord_serialized = model.serialized_input is not None
        run = _Run()
        read_q: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        model_q: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        done_q: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH + model_workers)
        lenient = bad_path is not None
        probe: pa.RecordBatch | None = None

        def read() -> None:
            nonlocal probe
            seq = 0
            chunks: Iterator[Chunk] = model.read(
                files,
                batch_size,
                keep,
                lenient=lenient,
                tfrecord_serialized=tfrecord_serialized,
                allow_missing=model.allow_missing,
                assembled=model.assembled,
            )
            t = time.perf_counter()
            for chunk in chunks:
                run.timed("read", t)
                if xla and probe is None and chunk.serialized is None and chunk.batch.num_rows:
                    probe = chunk.batch.slice(0, 16)  # a few rows to ask the session what XLA compiled
                run.put(read_q, _Item(seq, chunk))
                seq += 1
                t = time.perf_counter()
            run.put(read_q, _DONE)

        def convert() -> None:
            while True:
                item = run.get(read_q)
                if item is _DONE:
                    for _ in range(model_workers):
                        run.put(model_q, _DONE)
                    return
                t = time.perf_counter()
                item.chunk, item.feeds = _convert_checked(model, item.chunk, lenient)
                run.timed("convert", t)
                run.put(model_q, item)

        def predict() -> None:
            while True:
                item = run.get(model_q)
                if item is _DONE:
                    run.put(done_q, _DONE)
                    return
                if item.chunk.num_rows:
                    t = time.perf_counter()
                    item.outputs = model.predict(item.chunk, item.feeds)
                    run.timed("model", t)
                item.feeds = None
                run.put(done_q, item)

        declared = {
            k: output_type(t.dtype, t.shape) for k, t in predictor.signatures[model.signature].outputs.items()
        }
        threads_ += [_thread(run, "read", read), _thread(run, "convert", convert)]
        threads_ += [_thread(run, f"model{i}", predict) for i in range(model_workers)]

        rows = 0
        bad_writer = BadRowsWriter(bad_path) if bad_path is not None else None
        try:
            with write_atomically(out_path) as tmp:
                writer = None
                schema: pa.Schema | None = None
                pending: dict[int, _Item] = {}
                next_seq, finished = 0, 0
                while finished < model_workers:
                    try:
                        item = run.get(done_q)
                    except _Stopped:
                        break
                    if item is _DONE:
                        finished += 1
                        continue
                    pending[item.seq] = item
                    while next_seq in pending:
                        item = pending.pop(next_seq)
                        next_seq += 1
                        if bad_writer is not None and item.chunk.bad_rows:
                            bad_writer.write(item.chunk.bad_rows)
                        if not item.chunk.num_rows:
                            continue
                        if schema is None:
                            schema = output_schema(selected, declared, item.outputs, item.chunk.batch, keep)
                            writer = open_writer(tmp, schema, *_format_of(out_path))
                        assert writer is not None and item.outputs is not None
                        t = time.perf_counter()
                        writer.write(outputs_to_batch(item.outputs, schema, item.chunk.batch))
                        run.timed("write", t)
                        rows += item.chunk.num_rows
                        if progress is not None:
                            progress(item.chunk.num_rows)
                if run.error is not None:
                    raise run.error
                if writer is None:  # empty input: an empty output with the right schema
                    schema = output_schema(selected, declared, None, None, keep)
                    writer = open_writer(tmp, schema, *_format_of(out_path))
                t = time.perf_counter()
                writer.close()
                run.timed("write", t)
        except BaseException:
            run.stop.set()
            raise
        finally:
            run.stop.set()
            for thread in threads_:
                thread.join(timeout=10)
            if bad_writer is not None:
                bad_writer.close()
        seconds = time.perf_counter() - started
        log.debug("stage busy seconds: %s", {k: round(v, 3) for k, v in run.busy.items()})
        clusters = None
        if probe is not None:
            clusters = predictor.xla_clusters(model.table(probe), signature=model.signature)
        return PredictResult(
            rows=rows,
            seconds=seconds,
            output=out_path,
            bad_rows=bad_writer.count if bad_writer else 0,
            bad_rows_path=bad_path,
            files=[f.path for f in files],
            stage_seconds=dict(run.busy),
            xla_clusters=clusters,
        )
    finally:
        # A Predictor we loaded is ours to close, once no stage thread can still be running it.
        if owned and not any(t.is_alive() for t in threads_):
            predictor.close()


def _load(
    export: str | os.PathLike[str],
    signature: str | None,
    threads: int | None,
    inter_op: int | None,
    xla: bool,
) -> Predictor:
    from .predictor import Predictor

    return Predictor.load(export, signature, intra_op_threads=threads, inter_op_threads=inter_op, xla=xla)


def _format_of(path: Path) -> tuple[str, str | None]:
    from .io.writers import output_format

    return output_format(path)


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
        if outputs is not None and pa.types.is_list(t) and not _rank_known(name, outputs, t):
            from .io.writers import column_from_numpy

            t = column_from_numpy(outputs[name]).type
        fields.append(pa.field(name, t))
    return pa.schema(fields)


def _rank_known(name: str, outputs: dict[str, np.ndarray], t: pa.DataType) -> bool:
    depth = 0
    while pa.types.is_list(t):
        depth, t = depth + 1, t.value_type
    a = outputs[name]
    return a.ndim - 1 == depth or (a.ndim >= 2 and all(d == 1 for d in a.shape[1:]) and depth == 0)


__all__ = ["DEFAULT_BATCH_SIZE", "PredictResult", "predict_files"]
