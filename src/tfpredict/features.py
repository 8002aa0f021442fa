"""Table columns (Arrow / numpy / pandas) -> feed arrays for each feature of a model's input schema.

The public names of the conversion, each kept in a small module with one job:
  _featurespec.py  FeatureSpec (one model input), SparseValue, the dtype maps
  _tables.py       containers (DataFrame, Arrow, dicts, row dicts) -> named columns: Table, as_table
  _columns.py      which columns feed which feature: missing columns, allow_missing, assembled inputs
  _feeds.py        one column + its FeatureSpec -> the feed value (dense, raw tensor, var-len)
  _lists.py        list cells and JSON-list text -> dense rows
  _casts.py        casts to a feature's dtype that name the row of a value that does not fit
"""

from __future__ import annotations

from ._columns import (
    AllowMissing,
    Assemble,
    assemble_columns,
    check_assemble,
    input_table,
    missing_columns,
    missing_message,
    parse_columns,
    resolve_assemble,
    source_schema,
)
from ._featurespec import ARROW_TYPES, NUMPY_DTYPES, Column, FeatureSpec, SparseValue
from ._feeds import convert_column
from ._tables import Table, as_table, column_names

__all__ = [
    "ARROW_TYPES",
    "NUMPY_DTYPES",
    "AllowMissing",
    "Assemble",
    "Column",
    "FeatureSpec",
    "SparseValue",
    "Table",
    "as_table",
    "assemble_columns",
    "check_assemble",
    "column_names",
    "convert_column",
    "input_table",
    "missing_columns",
    "missing_message",
    "parse_columns",
    "resolve_assemble",
    "source_schema",
]
