"""Streaming file readers and atomic writers for batch prediction.

files.py: which files, which format; types.py: Chunks and the model's column types; one module per format
(csv.py, parquet.py, jsonl.py, tfrecord.py; lines.py for receivers of whole CSV lines); readers.py: all
inputs as one stream; writers.py: outputs written atomically.
"""

from .files import InputFile, expand_inputs
from .readers import read_inputs
from .types import BadRow, Chunk
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
