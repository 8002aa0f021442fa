"""`tfpredict predict ... --engine ray`: the predict subcommand's arguments handed to the Ray engine."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import UsageError


def run_predict_ray(args: argparse.Namespace) -> int:
    from .ray import import_ray

    import_ray()  # without Ray: one line saying how to install it, before anything else happens
    if getattr(args, "bad_rows", None):
        raise UsageError(
            "--bad-rows is not supported with --engine ray; fix the rows or use the local engine"
        )
    from ..pipeline_cli import Terminated, _signals, column_options
    from .ray import predict_files

    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()] if args.outputs else None
    debug = bool(getattr(args, "debug", False))
    try:
        with _signals(), _native_stderr_hidden(not debug):
            result = predict_files(
                args.export,
                args.inputs,
                args.output,
                address=args.address,
                workers=args.workers,
                batch_size=args.batch_size,
                signature=args.signature,
                outputs=outputs,
                keep=args.keep,
                threads=args.threads,
                inter_op_threads=args.inter_op_threads,
                xla=args.xla,
                progress=not args.quiet and sys.stderr.isatty(),
                quiet=not debug,
                **column_options(args),
            )
    except Terminated:
        if debug:
            raise
        print("tfpredict: terminated", file=sys.stderr)
        return 143
    if not args.quiet:
        print(f"tfpredict: {result.summary()}", file=sys.stderr)
        for line in result.actor_lines():
            print(f"tfpredict: {line}", file=sys.stderr)
    return 0


@contextmanager
def _native_stderr_hidden(hide: bool) -> Iterator[None]:
    """Send what C++ code writes to fd 2 (TensorFlow's graph notices, Ray core's actor notices) to
    /dev/null, while Python's sys.stderr (progress bars, our messages) still reaches the terminal."""
    if not hide:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    previous = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        sys.stderr.close()
        sys.stderr = previous
        os.close(saved)
        os.close(devnull)


__all__ = ["run_predict_ray"]
