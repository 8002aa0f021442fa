"""`tfpredict predict EXPORT INPUT... -o OUTPUT`: arguments, progress bar, signals (the work: pipeline.py)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import UsageError


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C (temporary output removed), then exit 143."""


def add_predict_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict every row of CSV / Parquet / JSON Lines / TFRecord files into one output file",
        description=(
            "Stream files of any size through an export: reading, feature conversion, the model and writing "
            "overlap in threads; output rows are in input order; the output appears only when complete."
        ),
    )
    p.add_argument("export", help="SavedModel version directory, or a base directory of numeric versions")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files, globs or directories (.csv[.gz], .parquet, .jsonl[.gz], .tfrecord[.gz])",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file; format from its extension: .parquet (default), .csv, .jsonl",
    )
    p.add_argument("--signature", help="signature to call (default: predict, else serving_default)")
    p.add_argument("--outputs", help="comma-separated model outputs to write (default: all)")
    p.add_argument(
        "--keep", nargs="+", default=[], metavar="COL", help="input columns (ids) to copy to the output"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="rows per model call (default: 8192, measured)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="TensorFlow intra-op threads (default: all cores)"
    )
    p.add_argument("--inter-op-threads", type=int, default=None, help="TensorFlow inter-op threads")
    p.add_argument(
        "--xla", action="store_true", help="jit-compile the model with XLA where the export allows it"
    )
    p.add_argument(
        "--bad-rows",
        metavar="FILE",
        help="write rows that cannot be read or converted here (.jsonl or .csv) and carry on",
    )
    add_column_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: threads in this process; ray: a Ray cluster (-o is then a new directory of files)",
    )
    p.add_argument(
        "--address", help="--engine ray: a running cluster (default: RAY_ADDRESS, else start one here)"
    )
    p.add_argument(
        "--workers", type=int, help="--engine ray: predictor actors (default: one per cluster node)"
    )
    p.set_defaults(run=run_predict)


def add_column_options(p: argparse.ArgumentParser) -> None:
    """--allow-missing and --assemble: which input columns feed the model (predict and doctor share them)."""
    p.add_argument(
        "--allow-missing",
        action="append",
        default=[],
        metavar="COL[,COL...]",
        help="columns the input may lack, each then missing in every row (default: a missing column "
        "the model reads is an error)",
    )
    p.add_argument(
        "--assemble",
        action="append",
        default=[],
        metavar="INPUT=COLS",
        help="build one tensor input from several columns: features=f0:f63 (a range, in file order) or "
        "features=f0,f1,f2; repeatable",
    )


def column_options(args: argparse.Namespace) -> dict[str, Any]:
    """allow_missing / assemble keyword arguments from --allow-missing and --assemble."""
    allow = [c.strip() for text in getattr(args, "allow_missing", None) or [] for c in text.split(",")]
    assemble: dict[str, str] = {}
    for text in getattr(args, "assemble", None) or []:
        name, sep, columns = text.partition("=")
        if not sep or not name.strip() or not columns.strip():
            raise UsageError(f"--assemble {text!r}: expected INPUT=FIRST:LAST or INPUT=COL,COL,...")
        if name.strip() in assemble:
            raise UsageError(f"--assemble: input {name.strip()!r} given twice")
        assemble[name.strip()] = columns.strip()
    return {"allow_missing": [c for c in allow if c], "assemble": assemble}


class _Progress:
    """tqdm bar with rows/s and ETA on a terminal (the total is estimated for text files); off otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def start(self, files: list[Any]) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        from .io.readers import estimate_rows

        self.bar = tqdm(
            total=estimate_rows(files),
            unit=" rows",
            unit_scale=True,
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def update(self, rows: int) -> None:
        if self.bar is not None:
            if self.bar.total is not None and self.bar.n + rows > self.bar.total:
                self.bar.total = self.bar.n + rows  # the estimate was short: never show more than 100%
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def _signals() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (so the temporary output is removed) and exits 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_predict(args: argparse.Namespace) -> int:
    if getattr(args, "engine", "local") == "ray":
        from .engines.ray_cli import run_predict_ray

        return run_predict_ray(args)
    from .pipeline import predict_files

    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()] if args.outputs else None
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    progress = _Progress(enabled=not args.quiet and sys.stderr.isatty())
    try:
        with _signals():
            result = predict_files(
                args.export,
                args.inputs,
                args.output,
                signature=args.signature,
                outputs=outputs,
                keep=args.keep,
                batch_size=args.batch_size,
                threads=args.threads,
                inter_op_threads=args.inter_op_threads,
                xla=args.xla,
                bad_rows=args.bad_rows,
                progress=progress.update,
                on_start=progress.start,
                **column_options(args),
            )
    except Terminated:
        progress.close()
        if getattr(args, "debug", False):
            raise
        print("tfpredict: terminated", file=sys.stderr)
        return 143
    finally:
        progress.close()
    if not args.quiet:
        print(f"tfpredict: {result.summary()}", file=sys.stderr)
        if result.xla_clusters == 0:
            print(
                "tfpredict: --xla: no part of this export could be compiled with XLA; it ran as usual",
                file=sys.stderr,
            )
    return 0


__all__ = ["add_column_options", "add_predict_parser", "column_options", "run_predict"]
