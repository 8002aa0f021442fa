"""The input files as Spark DataFrames, read by Spark's own readers, one DataFrame per file (a union of them
keeps the files' order, which one read of many files does not: Spark packs files into partitions by size).

CSV and JSON Lines columns are read as text: the workers type them with the local engine's casts, so a bad
cell is reported with its file, column and value instead of Spark's "Malformed records". Parquet keeps its
own types. TFRecord has no reader in Spark without a JVM package from outside PyPI, so a TFRecord file is
read as its bytes (Spark's binaryFile source) and parsed by the worker with the local engine's reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ..features import FeatureSpec
from ..io.csv import read_header
from ..io.files import InputFile
from ..io.parquet import parquet_columns
from .spark_worker import COLUMNS, TFRECORD_FILES


def read_file(
    spark: Any, file: InputFile, schema: dict[str, FeatureSpec], keep: Sequence[str]
) -> tuple[Any, str]:
    """One input file as a DataFrame of the columns the job needs, and how its rows reach the workers."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    wanted = list(dict.fromkeys([*schema, *keep]))
    path = str(file.path)
    if file.format == "tfrecord":
        return spark.read.format("binaryFile").load(path).select("path", "content"), TFRECORD_FILES
    if file.format == "parquet":
        present = set(parquet_columns(file))
        df = spark.read.parquet(path)
    elif file.format == "csv":
        header = read_header(file)
        present = set(header)
        text = StructType([StructField(name, StringType()) for name in header])
        df = (
            spark.read.schema(text)
            .option("header", True)
            .option("sep", file.delimiter)
            .option("quote", '"')
            .option("escape", '"')  # RFC 4180 (Spark's default escape is a backslash)
            .option("mode", "FAILFAST")
            .option("enforceSchema", True)  # our schema is the header itself
            .csv(path)
        )
    else:
        present = set(wanted)  # an absent key reads as null: the driver checked the first rows' keys
        text = StructType([StructField(name, StringType()) for name in wanted])
        df = spark.read.schema(text).option("mode", "FAILFAST").json(path)
    return df.select([F.col(f"`{name}`") for name in wanted if name in present]), COLUMNS


def spark_schema(schema: pa.Schema) -> Any:
    """A Spark StructType for an Arrow schema (what mapInArrow is told its output batches hold)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def arrow_schema(struct: Any) -> pa.Schema:
    """The Arrow schema of a Spark StructType (the types mapInArrow's input batches have)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(struct)


__all__ = ["arrow_schema", "read_file", "spark_schema"]
