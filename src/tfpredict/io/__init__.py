"""Streaming file readers and atomic writers for batch prediction."""

from .readers import BadRow, Chunk, InputFile, expand_inputs, read_inputs
from .writers import BadRowsWriter, check_output_path, open_writer, output_format, write_atomically

__all__ = [
    "BadRow",
    "BadRowsWriter",
    "Chunk",
    "InputFile",
    "check_output_path",
    "expand_inputs",
    "open_writer",
    "output_format",
    "read_inputs",
    "write_atomically",
]
