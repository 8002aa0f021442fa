"""A CSV file read as its raw lines, for receivers that take whole CSV lines (DecodeCSV in the export).

The lines go to the model as they are written, so the export's own DecodeCSV parses them exactly as it did
at training time (its defaults, its quoting). Arrow reads them: a delimiter and quote character that cannot
occur make every line one string cell, multi-threaded and without per-line Python. A header line is dropped
when its fields do not read as the export's numeric columns (a data line always does).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from ..errors import InputError
from ..savedmodel import CsvSpec
from .batches import rebatch
from .files import InputFile
from .types import Chunk

log = logging.getLogger(__name__)

UNIT_SEPARATOR = "\x1f"  # the ASCII control character for "field separator": absent from CSV text
NUMERIC = ("float", "int", "uint", "bool")


def has_header(first_line: str, spec: CsvSpec) -> bool:
    """Does this first line name the columns rather than hold a row? A row's numeric fields all parse as
    numbers (or are empty: DecodeCSV's default); a header's names do not."""
    fields = next(csv.reader([first_line], delimiter=spec.delimiter), [])
    if len(fields) != len(spec.dtypes):
        return False
    for text, dtype in zip(fields, spec.dtypes, strict=True):
        if dtype.startswith(NUMERIC) and text.strip():
            try:
                float(text)
            except ValueError:
                return True
    return False


def read_csv_lines(file: InputFile, spec: CsvSpec, batch_size: int) -> Iterator[Chunk]:
    """Stream a CSV file's lines as one string column named after the signature's line input."""
    try:
        with file.open_text(newline="") as f:
            first = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise InputError(f"{file}: cannot read: {e}") from None
    skip = 1 if first and has_header(first, spec) else 0
    if skip:
        log.info("%s: first line is a header (%s...), not fed to the model", file, first[:60])
    reader = pacsv.open_csv(
        str(file.path),
        read_options=pacsv.ReadOptions(column_names=[spec.line_input], skip_rows=skip, block_size=4 << 20),
        parse_options=pacsv.ParseOptions(delimiter=UNIT_SEPARATOR, quote_char=False, escape_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types={spec.line_input: pa.string()},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    first_row = 0
    for batch in rebatch(reader, batch_size):
        yield Chunk(batch, file, first_row)
        first_row += batch.num_rows
