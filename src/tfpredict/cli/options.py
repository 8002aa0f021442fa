"""Flags more than one command takes: the tag set and which input columns feed the model."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import UsageError


class CommandParser(argparse.ArgumentParser):
    """A command's parser: an unknown flag fails naming the closest known one, and a usage error is one
    line (the full usage of `serve` alone is 80 lines), pointing at --help."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self.unknown_message(extras[0]))
        return ns, extras

    def unknown_message(self, arg: str) -> str:
        if not arg.startswith("-"):
            return f"unexpected argument {arg!r}"
        flag = arg.split("=", 1)[0]
        known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        return f"unknown flag {flag}" + (f"; did you mean {close[0]}?" if close else "")

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def comma_list(text: str | None) -> list[str] | None:
    """Split a comma-separated flag: "a, b,,c" -> ["a", "b", "c"]; not given (None or "") -> None."""
    if not text:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


def add_tags_option(p: argparse.ArgumentParser, flag: str = "--tags") -> None:
    """The meta graph's tag set (TF Serving's --saved_model_tags); without it, the serving one."""
    p.add_argument(
        flag,
        default="",
        metavar="TAG[,TAG...]",
        help="the meta graph's tag set, comma-separated (default: the serving one, e.g. serve)",
    )


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
    allow = [c.strip() for text in args.allow_missing for c in text.split(",")]
    assemble: dict[str, str] = {}
    for text in args.assemble:
        name, sep, columns = text.partition("=")
        if not sep or not name.strip() or not columns.strip():
            raise UsageError(f"--assemble {text!r}: expected INPUT=FIRST:LAST or INPUT=COL,COL,...")
        if name.strip() in assemble:
            raise UsageError(f"--assemble: input {name.strip()!r} given twice")
        assemble[name.strip()] = columns.strip()
    return {"allow_missing": [c for c in allow if c], "assemble": assemble}


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments every engine's predict_files takes from the same flags (plus column_options)."""
    return {
        "batch_size": args.batch_size,
        "signature": args.signature,
        "outputs": comma_list(args.outputs),
        "keep": args.keep,
        "threads": args.threads,
        "inter_op_threads": args.inter_op_threads,
        "xla": args.xla,
        **column_options(args),
    }
