"""`tfpredict COMMAND ...`: the parser of every command, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import TfpredictError
from .terminal import INTERRUPTED_EXIT, TERMINATED_EXIT, Terminated, import_tensorflow_quietly


def build_parser() -> argparse.ArgumentParser:
    # The command modules import TensorFlow (serve's options come with TF Serving's protos): main() has
    # imported it quietly by now.
    from .. import __version__
    from . import doctor, inspect, predict, serve
    from .options import CommandParser

    parser = argparse.ArgumentParser(
        prog="tfpredict",
        description="Fast, explained prediction for TensorFlow Estimator exports and any other SavedModel.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"tfpredict {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    for command in (inspect, predict, doctor, serve):
        command.add_parser(sub)  # each adds its subparser, with `run` as its default
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A TfpredictError (a user mistake) is one `tfpredict: error: ...` line and its
    exit code; Ctrl-C exits 130 and SIGTERM (where a command unwinds on it) 143; --debug re-raises them
    all. Any other exception is our bug and shows its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        # Every command runs TensorFlow, and the subcommands' modules import it while the parser is built
        # (help included): import it first, quietly, so its start-up banner never reaches the terminal.
        if not debug:
            import_tensorflow_quietly()
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C during the seconds of start-up: nothing has been written yet
        if debug:
            raise
        print("tfpredict: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
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
        return INTERRUPTED_EXIT
    except Terminated:
        if args.debug:
            raise
        print("tfpredict: terminated", file=sys.stderr)
        return TERMINATED_EXIT


if __name__ == "__main__":
    sys.exit(main())
