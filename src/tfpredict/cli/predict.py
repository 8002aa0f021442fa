"""`tfpredict predict EXPORT INPUT... -o OUTPUT`, on any engine: threads in this process (pipeline.py),
a Ray cluster (engines/ray.py) or Spark (engines/spark.py)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError
from .options import add_column_options, add_tags_option, comma_list, model_options
from .terminal import Progress, is_terminal, native_stderr_hidden, say, sigterm_unwinds


def add_parser(subparsers: Any) -> None:
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
    add_tags_option(p)
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
        choices=["local", "ray", "spark"],
        default="local",
        help="local: threads in this process; ray: a Ray cluster; spark: Spark, local[*] or --master "
        "(ray and spark: -o is then a new directory of files)",
    )
    p.add_argument(
        "--address", help="--engine ray: a running cluster (default: RAY_ADDRESS, else start one here)"
    )
    p.add_argument(
        "--workers", type=int, help="--engine ray: predictor actors (default: one per cluster node)"
    )
    p.add_argument(
        "--master", help="--engine spark: spark://HOST:PORT, yarn, k8s://... (default: local[*] here)"
    )
    p.add_argument(
        "--executors", type=int, help="--engine spark: executors (local: task slots; default: Spark's)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.engine == "spark":
        return run_spark(args)
    return run_ray(args) if args.engine == "ray" else run_local(args)


def run_local(args: argparse.Namespace) -> int:
    from ..pipeline import predict_files

    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    progress = Progress(enabled=not args.quiet and is_terminal())
    try:
        with sigterm_unwinds():
            result = predict_files(
                args.export,
                args.inputs,
                args.output,
                tags=comma_list(args.tags),
                bad_rows=args.bad_rows,
                progress=progress.update,
                on_start=progress.start,
                **model_options(args),
            )
    finally:
        progress.close()
    if not args.quiet:
        say(result.summary())
        if result.xla_clusters == 0:
            say("--xla: no part of this export could be compiled with XLA; it ran as usual")
    return 0


def run_ray(args: argparse.Namespace) -> int:
    from ..engines.ray import import_ray

    import_ray()  # without Ray: one line saying how to install it, before anything else happens
    if args.bad_rows:
        raise UsageError(
            "--bad-rows is not supported with --engine ray; fix the rows or use the local engine"
        )
    if args.tags:
        raise UsageError("--tags is not supported with --engine ray yet; use the local engine")
    from ..engines.ray import predict_files

    # Ray core's actor notices and TensorFlow's graph notices (C++, fd 2) would bury the progress bar.
    with sigterm_unwinds(), native_stderr_hidden(hide=not args.debug):
        result = predict_files(
            args.export,
            args.inputs,
            args.output,
            address=args.address,
            workers=args.workers,
            progress=not args.quiet and is_terminal(),
            quiet=not args.debug,
            **model_options(args),
        )
    if not args.quiet:
        say(result.summary())
        for line in result.actor_lines():
            say(line)
    return 0


def run_spark(args: argparse.Namespace) -> int:
    from ..engines.spark_session import import_pyspark

    import_pyspark()  # without pyspark or Java: one line saying what to install, before anything else
    for flag, value in (("--bad-rows", args.bad_rows), ("--tags", args.tags), ("--address", args.address)):
        if value:
            raise UsageError(f"{flag} is not supported with --engine spark; use the local engine")
    from ..engines.spark import predict_files

    # The JVM's log4j start-up lines and TensorFlow's graph notices (fd 2) would bury our summary.
    with sigterm_unwinds(), native_stderr_hidden(hide=not args.debug):
        result = predict_files(
            args.export,
            args.inputs,
            args.output,
            master=args.master,
            executors=args.executors,
            quiet=not args.debug,
            **model_options(args),
        )
    if not args.quiet:
        say(result.summary())
        for line in result.worker_lines():
            say(line)
    return 0
