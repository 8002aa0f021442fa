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
from typing import Any

import numpy as np
import pyarrow as pa

from . import features as F
from .engines.common import check_keep, first_bad_row, output_schema, selected_outputs, without_row_prefix
from .errors import InputError, UsageError
from .io.files import InputFile, expand_inputs
from .io.lines import read_csv_lines
from .io.readers import input_columns, read_inputs
from .io.types import Chunk, split_bad_rows
from .io.writers import (
    BadRowsWriter,
    check_output_path,
    open_writer,
    output_format,
    output_type,
    outputs_to_batch,
    write_atomically,
)
from .predictor import DEFAULT_BATCH_SIZE, CallPath, Predictor
from .stages import DONE, Run, Stopped, start_stage

log = logging.getLogger(__name__)

QUEUE_DEPTH = 3  # batches waiting between two stages
#: Model calls in flight at once. One call of a small dense model keeps ~1 of 2 cores busy (its ops are too
#: small to split well); two overlapping calls fill the gaps: +5-50% rows/s on bench_dnn (best of 4-5 rounds).
MODEL_WORKERS = 2


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


@dataclass
class _Item:
    seq: int
    chunk: Chunk
    feeds: Any = None
    outputs: dict[str, np.ndarray] | None = None


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
        # the signature input that takes serialized tf.Examples, when the export parses Examples itself
        tensors = self.path == CallPath.TENSORS
        self.serialized_input = None if tensors else predictor.serialized_input_for(signature)
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
            if record is None or self.csv_lines is None:
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


_DECODE_CSV_RECORD = re.compile(r" in record (\d+)")


def _bad_rows_of(model: _Model, chunk: Chunk, start: int, stop: int, found: dict[int, str]) -> None:
    """All rows in [start, stop) whose conversion fails, with their messages (bisection)."""
    try:
        model.convert_batch(chunk.batch.slice(start, stop - start))
        return
    except InputError as e:
        if stop - start == 1:
            found[start] = without_row_prefix(e.message)
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
            i, message = first_bad_row(model.convert_batch, chunk.batch)
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
    tags: list[str] | None = None,
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
    progress(rows) is called after each written batch. tags: the meta graph's tag set (default: the serving
    one).
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
    out_path, bad_path, files = _check_paths(inputs, output, bad_rows)
    keep = list(dict.fromkeys(keep))
    predictor = (
        export
        if not isinstance(export, (str, os.PathLike))
        else _load(export, signature, threads, inter_op_threads, xla, tags)
    )
    owned = predictor is not export
    job: _Job | None = None
    try:
        model, selected = _prepare(predictor, files, signature, outputs, keep, allow_missing, assemble)
        if on_start is not None:
            on_start(files)
        job = _Job(model, files, keep, batch_size, bad_path is not None, xla, model_workers)
        job.start()
        bad_writer = BadRowsWriter(bad_path) if bad_path is not None else None
        try:
            with write_atomically(out_path) as tmp:
                rows = _write(job, tmp, out_path, selected, keep, bad_writer, progress)
        finally:
            job.stop()
            if bad_writer is not None:
                bad_writer.close()
        seconds = time.perf_counter() - started
        log.debug("stage busy seconds: %s", {k: round(v, 3) for k, v in job.run.busy.items()})
        return PredictResult(
            rows=rows,
            seconds=seconds,
            output=out_path,
            bad_rows=bad_writer.count if bad_writer else 0,
            bad_rows_path=bad_path,
            files=[f.path for f in files],
            stage_seconds=dict(job.run.busy),
            xla_clusters=job.xla_clusters(),
        )
    finally:
        # A Predictor we loaded is ours to close, once no stage thread can still be running it.
        if owned and (job is None or not any(t.is_alive() for t in job.threads)):
            predictor.close()


def _check_paths(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    bad_rows: str | os.PathLike[str] | None,
) -> tuple[Path, Path | None, list[InputFile]]:
    """The output, the --bad-rows file and the input files, each checked before any model is loaded."""
    out_path = check_output_path(output)
    bad_path = Path(bad_rows) if bad_rows is not None else None
    if bad_path is not None:
        check_output_path(bad_path.with_suffix(".csv"))
        if bad_path.resolve() == out_path.resolve():
            raise UsageError("--bad-rows must name a different file than the output")
    files = expand_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    if any(f.path.resolve() == out_path.resolve() for f in files):
        raise UsageError(f"{out_path} is also an input; write the predictions to another file")
    return out_path, bad_path, files


def _prepare(
    predictor: Predictor,
    files: list[InputFile],
    signature: str | None,
    outputs: Sequence[str] | None,
    keep: list[str],
    allow_missing: F.AllowMissing | None,
    assemble: F.Assemble | None,
) -> tuple[_Model, list[str]]:
    """How the run calls the model, and the outputs it writes; UsageError for what cannot be asked."""
    wanted = predictor.assemble if assemble is None else assemble
    model = _Model(
        predictor,
        signature or predictor.signature,
        list(outputs) if outputs else None,
        predictor.allow_missing if allow_missing is None else allow_missing,
        F.resolve_assemble(wanted, input_columns(files[0]) if wanted else None),
    )
    selected = selected_outputs(list(predictor.signatures[model.signature].outputs), outputs, model.signature)
    if (
        model.csv_lines is not None
        and keep
        and any(f.format == "csv" and model.csv_lines.line_input not in input_columns(f) for f in files)
    ):
        raise UsageError(
            f"--keep needs named columns; the signature {model.signature!r} takes whole CSV lines "
            f"(its input {model.csv_lines.line_input!r}), which are fed as they are"
        )
    check_keep(keep, selected)
    return model, selected


class _Job:
    """The stage threads of one run and their queues: read -> convert -> model(s) -> `results()`."""

    def __init__(
        self,
        model: _Model,
        files: list[InputFile],
        keep: list[str],
        batch_size: int,
        lenient: bool,
        xla: bool,
        model_workers: int,
    ) -> None:
        self.model, self.files, self.keep, self.batch_size = model, files, keep, batch_size
        self.lenient, self.xla, self.model_workers = lenient, xla, model_workers
        self.run = Run()
        self.read_q: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        self.model_q: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        self.done_q: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH + model_workers)
        self.probe: pa.RecordBatch | None = None  # with xla: a few rows to ask the session what XLA compiled
        self.threads: list[threading.Thread] = []
        signature_outputs = model.predictor.signatures[model.signature].outputs
        self.declared = {k: output_type(t.dtype, t.shape) for k, t in signature_outputs.items()}

    def start(self) -> None:
        stages = [("read", self._read), ("convert", self._convert)]
        stages += [(f"model{i}", self._predict) for i in range(self.model_workers)]
        self.threads += [start_stage(self.run, name, target) for name, target in stages]

    def stop(self) -> None:
        self.run.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def xla_clusters(self) -> int | None:
        """With xla: the XLA clusters the model ran on the probe rows (0: nothing compiled)."""
        if self.probe is None:
            return None
        return self.model.predictor.xla_clusters(self.model.table(self.probe), signature=self.model.signature)

    def _read(self) -> None:
        seq = 0
        chunks: Iterator[Chunk] = self.model.read(
            self.files,
            self.batch_size,
            self.keep,
            lenient=self.lenient,
            tfrecord_serialized=self.model.serialized_input is not None,
            allow_missing=self.model.allow_missing,
            assembled=self.model.assembled,
        )
        t = time.perf_counter()
        for chunk in chunks:
            self.run.timed("read", t)
            if self.xla and self.probe is None and chunk.serialized is None and chunk.batch.num_rows:
                self.probe = chunk.batch.slice(0, 16)
            self.run.put(self.read_q, _Item(seq, chunk))
            seq += 1
            t = time.perf_counter()
        self.run.put(self.read_q, DONE)

    def _convert(self) -> None:
        while True:
            item = self.run.get(self.read_q)
            if item is DONE:
                for _ in range(self.model_workers):
                    self.run.put(self.model_q, DONE)
                return
            t = time.perf_counter()
            item.chunk, item.feeds = _convert_checked(self.model, item.chunk, self.lenient)
            self.run.timed("convert", t)
            self.run.put(self.model_q, item)

    def _predict(self) -> None:
        while True:
            item = self.run.get(self.model_q)
            if item is DONE:
                self.run.put(self.done_q, DONE)
                return
            if item.chunk.num_rows:
                t = time.perf_counter()
                item.outputs = self.model.predict(item.chunk, item.feeds)
                self.run.timed("model", t)
            item.feeds = None
            self.run.put(self.done_q, item)

    def results(self) -> Iterator[_Item]:
        """The predicted chunks in input order; the first error of any stage is raised here."""
        pending: dict[int, _Item] = {}
        next_seq, finished = 0, 0
        while finished < self.model_workers:
            try:
                item = self.run.get(self.done_q)
            except Stopped:
                break
            if item is DONE:
                finished += 1
                continue
            pending[item.seq] = item
            while next_seq in pending:
                yield pending.pop(next_seq)
                next_seq += 1
        if self.run.error is not None:
            raise self.run.error


def _write(
    job: _Job,
    tmp: Path,
    out_path: Path,
    selected: list[str],
    keep: list[str],
    bad_writer: BadRowsWriter | None,
    progress: Callable[[int], None] | None,
) -> int:
    """Write the job's predictions to tmp as they come, in input order; the rows written."""
    writer = None
    schema: pa.Schema | None = None
    rows = 0
    for item in job.results():
        if bad_writer is not None and item.chunk.bad_rows:
            bad_writer.write(item.chunk.bad_rows)
        if not item.chunk.num_rows:
            continue
        if schema is None:
            schema = output_schema(selected, job.declared, item.outputs, item.chunk.batch, keep)
            writer = open_writer(tmp, schema, *output_format(out_path))
        assert writer is not None and item.outputs is not None
        t = time.perf_counter()
        writer.write(outputs_to_batch(item.outputs, schema, item.chunk.batch))
        job.run.timed("write", t)
        rows += item.chunk.num_rows
        if progress is not None:
            progress(item.chunk.num_rows)
    if writer is None:  # empty input: an empty output with the right schema
        schema = output_schema(selected, job.declared, None, None, keep)
        writer = open_writer(tmp, schema, *output_format(out_path))
    t = time.perf_counter()
    writer.close()
    job.run.timed("write", t)
    return rows


def _load(
    export: str | os.PathLike[str],
    signature: str | None,
    threads: int | None,
    inter_op: int | None,
    xla: bool,
    tags: list[str] | None = None,
) -> Predictor:
    return Predictor.load(
        export, signature, intra_op_threads=threads, inter_op_threads=inter_op, xla=xla, tags=tags
    )


__all__ = ["DEFAULT_BATCH_SIZE", "PredictResult", "output_schema", "predict_files"]
