"""All input files as one stream of `Chunk`s: each file read by its format's module.

    files.py (which files, which format) -> csv.py / parquet.py / jsonl.py / tfrecord.py -> Chunks
    types.py: the model's column types and the casts the formats share; batches.py: re-cutting streams

Every reader yields `Chunk`s of at most `batch_size` rows and never holds a whole file; columns come in
the model's types (see types.py). The names below are the io package's reading API.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import InputError
from ..features import AllowMissing, FeatureSpec
from .batches import rebatch
from .csv import read_csv, read_header
from .files import InputFile, detect_format, estimate_rows, expand_inputs, input_bytes
from .jsonl import first_keys, read_jsonl
from .parquet import parquet_columns, read_parquet
from .tfrecord import example_features, parse_spec, read_tfrecord
from .types import BadRow, Chunk, check_columns, column_type, floats_to_ints, split_bad_rows, value_type


def read_inputs(
    files: Sequence[InputFile],
    schema: dict[str, FeatureSpec],
    batch_size: int,
    keep: Sequence[str] = (),
    *,
    lenient: bool = False,
    tfrecord_serialized: bool = True,
    allow_missing: AllowMissing = (),
    assembled: dict[str, list[str]] | None = None,
) -> Iterator[Chunk]:
    """All input files in order, as one stream of chunks.

    schema: the columns to read (the model's features, assembled inputs replaced by their source columns:
    features.source_schema). A file without one of them fails, unless allow_missing names it (or is True).
    """
    columns: dict[str, Any] = {"allow_missing": allow_missing, "assembled": assembled}
    for file in files:
        if file.format == "csv":
            yield from read_csv(file, schema, batch_size, keep, lenient=lenient, **columns)
        elif file.format == "parquet":
            yield from read_parquet(file, schema, batch_size, keep, **columns)
        elif file.format == "jsonl":
            yield from read_jsonl(file, schema, batch_size, keep, **columns)
        elif file.format == "tfrecord":
            yield from read_tfrecord(file, schema, batch_size, keep, serialized=tfrecord_serialized)
        else:  # pragma: no cover - detect_format only returns the above
            raise InputError(f"{file}: unsupported format {file.format}")


def input_columns(file: InputFile) -> list[str]:
    """A file's column names in file order (for a column range such as --assemble features=f0:f63): the CSV
    header, the Parquet schema, the keys of the first JSON line, the features of the first tf.Example."""
    if file.format == "csv":
        return read_header(file)
    if file.format == "parquet":
        return parquet_columns(file)
    if file.format == "jsonl":
        return first_keys(file)
    return example_features(file)


__all__ = [
    "BadRow",
    "Chunk",
    "InputFile",
    "check_columns",
    "column_type",
    "detect_format",
    "estimate_rows",
    "expand_inputs",
    "floats_to_ints",
    "input_bytes",
    "input_columns",
    "parse_spec",
    "read_csv",
    "read_inputs",
    "read_jsonl",
    "read_parquet",
    "read_tfrecord",
    "rebatch",
    "split_bad_rows",
    "value_type",
]
