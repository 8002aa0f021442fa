"""The `tfpredict` command: argument parsing and printing only; the work is done by library functions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import TfpredictError

Runner = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfpredict",
        description="Fast, explained prediction for TensorFlow Estimator exports and any other SavedModel.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"tfpredict {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    inspect = sub.add_parser("inspect", help="show an export's signatures, feature schema, outputs and path")
    inspect.add_argument("export", help="SavedModel version dir, or a base dir of numeric versions")
    inspect.add_argument("--signature", help="signature to describe (default: predict, else serving_default)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument(
        "--tags", help="the meta graph's tag set, comma-separated (default: the serving one, e.g. serve)"
    )
    inspect.set_defaults(run=run_inspect)

    for register in _subcommands():
        register(sub)
    return parser


def _subcommands() -> list[Callable[[Any], object]]:
    """Subcommands living in their own modules (each adds its parser and sets `run`)."""
    from .doctor.cli import add_doctor_parser
    from .pipeline_cli import add_predict_parser
    from .serving.cli import add_serve_parser

    registered: list[Callable[[Any], object]] = [add_predict_parser, add_doctor_parser, add_serve_parser]
    return registered


def run_inspect(args: argparse.Namespace) -> int:
    from .inspect import describe, format_description

    tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
    info = describe(args.export, signature=args.signature, tags=tags)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_description(info))
    return 0


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up chatter (oneDNN, CUDA, absl) goes to fd 2 before any log level applies;
    a command-line user should see only our one-line messages, so hide fd 2 while it loads."""
    import os

    # 3: graph-optimizer chatter at model load (e.g. type inference on Estimator summary ops) is logged as
    # errors although nothing failed; tfpredict reports real failures itself.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_physical_devices("GPU")  # device discovery logs its CUDA failure here
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Every command runs TensorFlow, and the subcommands' modules import it while the parser is built
    # (help included): import it first, quietly, so its start-up banner never reaches the terminal.
    if "--debug" not in argv:
        _import_tensorflow_quietly()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except TfpredictError as exc:
        if args.debug:
            raise
        print(f"tfpredict: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("tfpredict: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
