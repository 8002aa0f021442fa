"""`tfpredict doctor EXPORT DATA`: arguments and printing (the work: doctor/, measure then advise)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import OutputError, UsageError
from .options import add_column_options, add_tags_option, column_options, comma_list


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="measure where prediction time goes (input, model, output) on your data, and what to change",
        description=(
            "Measure each stage of batch prediction on a sample of DATA (reading, feature conversion, "
            "the model alone, writing) and the real pipelined job; name the bottleneck; sweep batch size, "
            "threads, XLA and "
            "input format; list the model's top ops; recommend settings for `tfpredict predict`."
        ),
    )
    p.add_argument("export", help="SavedModel version directory, or a base directory of numeric versions")
    p.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help="input files, globs or directories (.csv[.gz], .parquet, .jsonl[.gz], .tfrecord[.gz])",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        help="at most this many rows in the sample (default: what fits the time budget)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="time budget of the whole command, start-up and loading included (default: 60)",
    )
    p.add_argument("--signature", help="signature to call (default: predict, else serving_default)")
    add_tags_option(p)
    p.add_argument(
        "--output-format",
        choices=["parquet", "csv", "jsonl"],
        default="parquet",
        help="the format your job writes (default: parquet)",
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of the summary"
    )
    p.add_argument(
        "--report", metavar="FILE.html", help="also write a self-contained HTML report with charts"
    )
    add_column_options(p)  # --allow-missing, --assemble: the input columns as `tfpredict predict` reads them
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..doctor import doctor
    from ..doctor.report import format_json, format_text, write_html

    if args.seconds <= 0:
        raise UsageError("--seconds must be positive")
    if args.rows is not None and args.rows < 1:
        raise UsageError("--rows must be at least 1")
    if args.report:  # fail before a minute of measuring, not after
        parent = Path(args.report).parent
        if not parent.is_dir():
            raise OutputError(f"{args.report}: directory {parent} does not exist")

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"tfpredict doctor: {text}...", file=sys.stderr, flush=True)

    # The budget is the whole command's: Python and TensorFlow start-up already spent part of it.
    seconds = max(args.seconds - process_age() - 0.5, 0.5 * args.seconds)
    diagnosis = doctor(
        args.export,
        args.data,
        rows=args.rows,
        seconds=seconds,
        signature=args.signature,
        tags=comma_list(args.tags),
        output_format=args.output_format,
        progress=progress,
        **column_options(args),
    )
    if args.report:
        path = write_html(diagnosis, args.report)
        if not args.quiet:
            print(f"tfpredict doctor: report written to {path}", file=sys.stderr)
    print(format_json(diagnosis) if args.json else format_text(diagnosis))
    return 0


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0
