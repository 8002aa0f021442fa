"""`tfpredict inspect EXPORT`: what an export takes and gives (the work: tfpredict/inspect.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .options import add_tags_option, comma_list


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("inspect", help="show an export's signatures, feature schema, outputs and path")
    p.add_argument("export", help="SavedModel version dir, or a base dir of numeric versions")
    p.add_argument("--signature", help="signature to describe (default: predict, else serving_default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_tags_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inspect import describe, format_description

    info = describe(args.export, signature=args.signature, tags=comma_list(args.tags))
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0
