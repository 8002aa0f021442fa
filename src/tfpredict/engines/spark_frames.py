"""tfpredict on Spark DataFrames: `predict(df, export)` (a lazy DataFrame of --keep columns + outputs) and
`predict_udf(export)` (a column expression for select / withColumn).

Both run the same Predictor as the local engine in Spark's Python workers, each loading the export once
(spark_export.py) and moving Arrow batches only (mapInArrow; arrow_udf for the UDF on pyspark 4.1+, else a
pandas UDF). The driver loads the export too, to learn the signature, the columns and the output schema
before any work is sent out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InputError, UsageError
from ..features import (
    Assemble,
    FeatureSpec,
    missing_columns,
    missing_message,
    resolve_assemble,
    source_schema,
)
from ..io.writers import output_type
from ..predictor import DEFAULT_BATCH_SIZE, CallPath, Predictor
from .common import CALLER_THREAD, LoadOptions, check_keep, output_schema, selected_outputs
from .spark_export import ExportRef, ship_export
from .spark_read import arrow_schema, spark_schema
from .spark_worker import COLUMNS, WorkerSettings, predict_partition, predict_structs

#: Rows the driver predicts itself when an output's rank is unknown (its column type comes from them).
SAMPLE_ROWS = 16


@dataclass
class ModelPlan:
    """What the driver learned from the export: the signature, the columns it reads, the outputs."""

    export_dir: Path
    signature: str
    schema: dict[str, FeatureSpec]  # the columns to read (assembled inputs replaced by their sources)
    selected: list[str]
    declared: dict[str, pa.DataType]
    unknown_rank: list[str]  # outputs whose column type only a prediction tells
    assembled: dict[str, list[str]]
    tfrecord_serialized: bool
    csv_lines: bool  # the export parses whole CSV lines itself


def plan_model(
    predictor: Predictor,
    outputs: Sequence[str] | None,
    keep: Sequence[str],
    assemble: Assemble | None,
    columns: list[str] | None,
) -> ModelPlan:
    """A job's plan from a Predictor loaded on the driver; UsageError for unknown outputs, --keep clashes."""
    sig = predictor.signature
    assembled = resolve_assemble(assemble, columns if assemble else None)
    selected = selected_outputs(list(predictor.signatures[sig].outputs), outputs, sig)
    check_keep(keep, selected)
    specs = predictor.signatures[sig].outputs
    return ModelPlan(
        predictor.export_dir,
        sig,
        source_schema(predictor.inputs_for(sig), assembled),
        selected,
        {k: output_type(t.dtype, t.shape) for k, t in specs.items()},
        [k for k in selected if _rank_unknown(specs[k].shape)],
        assembled,
        tfrecord_serialized=predictor.path_for(sig) != CallPath.TENSORS,
        csv_lines=predictor.csv_spec_for(sig) is not None,
    )


def _rank_unknown(shape: Any) -> bool:
    if shape is None or getattr(shape, "rank", 0) is None:
        return True
    try:
        list(shape)
    except (TypeError, ValueError):
        return True
    return False


def job_schema(
    plan: ModelPlan,
    keep: Sequence[str],
    keep_types: dict[str, pa.DataType],
    sample: dict[str, np.ndarray] | None,
) -> pa.Schema:
    """The output schema: --keep columns in their types, then the outputs (the local engine's columns)."""
    outputs = output_schema(plan.selected, plan.declared, sample, None, [])
    kept = [pa.field(k, keep_types.get(k, pa.string())) for k in keep]
    return pa.schema([*kept, *outputs])


def worker_settings(
    ref: ExportRef,
    plan: ModelPlan,
    schema: pa.Schema,
    keep: Sequence[str],
    keep_types: dict[str, pa.DataType],
    load: LoadOptions,
    allow_missing: bool | Sequence[str],
    text_lists: bool = False,
) -> WorkerSettings:
    return WorkerSettings(
        export=ref,
        load=load,
        schema=schema,
        outputs=tuple(plan.selected),
        keep=tuple(keep),
        keep_types=tuple(keep_types.items()),
        allow_missing=allow_missing if isinstance(allow_missing, bool) else tuple(allow_missing),
        assembled=tuple((k, tuple(v)) for k, v in plan.assembled.items()),
        text_lists=text_lists,
        source=COLUMNS,
        tfrecord_serialized=plan.tfrecord_serialized,
    )


def predict(
    df: Any,
    export: str | os.PathLike[str],
    *,
    keep: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    signature: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_missing: bool | Sequence[str] = (),
    assemble: Assemble | None = None,
    threads: int | None = None,
    inter_op_threads: int | None = None,
    xla: bool = False,
    shared_export: bool = False,
    stats: Any = None,
) -> Any:
    """The predictions of every row of a Spark DataFrame, as a lazy DataFrame: `keep` columns (their types),
    then one column per output (list outputs as array columns), as the local engine writes them.

    Feature columns may be in any type Spark holds (text, double for a float feature, ...): they are cast
    to the model's, and a value that does not fit is an InputError naming its column. shared_export: every
    node reads `export` at that path (else it is shipped with SparkContext.addArchive). threads: TensorFlow
    threads per Python worker (default: spark.task.cpus). stats: an accumulator from
    `spark_worker.stats_accumulator`, filled with what each worker did once the DataFrame is computed.
    """
    keep = list(dict.fromkeys(keep or []))
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, not {batch_size}")
    columns = list(df.columns)
    with Predictor.load(export, signature, intra_op_threads=1) as predictor:
        plan = plan_model(predictor, outputs, keep, assemble, columns)
        _check_frame_columns(columns, plan.schema, keep, allow_missing, plan.assembled)
        wanted = [c for c in dict.fromkeys([*plan.schema, *keep]) if c in columns]
        frame = df.select([f"`{c}`" for c in wanted])
        sample = _sample(frame, predictor, plan, allow_missing) if plan.unknown_rank else None
    spark = df.sparkSession
    keep_types = {f.name: f.type for f in arrow_schema(frame.select([f"`{k}`" for k in keep]).schema)}
    schema = job_schema(plan, keep, keep_types, sample)
    load = load_options(spark, plan.signature, threads, inter_op_threads, xla, batch_size)
    settings = worker_settings(
        ship_export(spark, plan.export_dir, shared=shared_export), plan, schema, keep, {}, load, allow_missing
    )
    return frame.mapInArrow(partial(predict_partition, settings=settings, stats=stats), spark_schema(schema))


def predict_udf(
    export: str | os.PathLike[str],
    *,
    outputs: Sequence[str] | None = None,
    signature: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_missing: bool | Sequence[str] = (),
    assemble: Assemble | None = None,
    threads: int | None = None,
    inter_op_threads: int | None = None,
    xla: bool = False,
    shared_export: bool = False,
    spark: Any = None,
) -> Callable[..., Any]:
    """A function of columns returning a struct column of the outputs, for `select` / `withColumn`:

        score = predict_udf("/models/ctr/export", outputs=["logistic"])
        df.withColumn("p", score()).select("id", "p.logistic")   # score(): the model's columns by name

    Called with columns (`score("age", "city")`), it passes those to the model under their names.
    """
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise UsageError("predict_udf needs a SparkSession: create one first (SparkSession.builder...)")
    with Predictor.load(export, signature, intra_op_threads=1) as predictor:
        plan = plan_model(predictor, outputs, [], assemble, None)
    if plan.unknown_rank:
        raise UsageError(
            f"output(s) {', '.join(plan.unknown_rank)} have no known rank, so a UDF cannot declare their "
            "type; "
            "use tfpredict.spark.predict(df, ...), which learns it from the first rows"
        )
    schema = job_schema(plan, [], {}, None)
    load = load_options(spark, plan.signature, threads, inter_op_threads, xla, batch_size)
    ref = ship_export(spark, plan.export_dir, shared=shared_export)
    settings = worker_settings(ref, plan, schema, [], {}, load, allow_missing)
    udf = _struct_udf(settings, spark_schema(schema))

    def call(*cols: Any) -> Any:
        names = cols or tuple(plan.schema)
        return udf(F.struct(*[F.col(f"`{c}`") if isinstance(c, str) else c for c in names]))

    return call


def _struct_udf(settings: WorkerSettings, struct: Any) -> Any:
    """Arrow in and out where pyspark has it (arrow_udf, 4.1+), else a pandas UDF over the same code."""
    import pyspark.sql.functions as sf

    arrow_udf = getattr(sf, "arrow_udf", None)  # pyspark 4.1+
    if arrow_udf is not None:

        def on_arrow(arrays: Iterator[pa.Array]) -> Iterator[pa.Array]:
            return predict_structs(arrays, settings)

        return arrow_udf(on_arrow, struct)  # type: ignore[call-overload]

    from pyspark.sql.functions import PandasUDFType, pandas_udf

    def on_pandas(frames: Iterator[Any]) -> Iterator[Any]:
        for out in predict_structs((_struct_of(f) for f in frames), settings):
            yield pa.RecordBatch.from_struct_array(out).to_pandas()

    return pandas_udf(on_pandas, struct, PandasUDFType.SCALAR_ITER)  # type: ignore[call-overload]


def _struct_of(frame: Any) -> pa.StructArray:
    batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    return pa.StructArray.from_arrays(batch.columns, fields=list(batch.schema))


def load_options(
    spark: Any, signature: str, threads: int | None, inter_op: int | None, xla: bool, batch_size: int
) -> LoadOptions:
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, not {threads}")
    # One task per spark.task.cpus cores, each in its own Python worker: TensorFlow gets that many threads,
    # and runs its ops in the worker's own thread (no inter-op pool to hand each model call to).
    task_cpus = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))
    return LoadOptions(signature, threads or task_cpus, inter_op or CALLER_THREAD, xla, batch_size)


def _check_frame_columns(
    columns: list[str],
    schema: dict[str, FeatureSpec],
    keep: Sequence[str],
    allow_missing: bool | Sequence[str],
    assembled: dict[str, list[str]],
) -> None:
    missing = missing_columns(columns, schema, allow_missing)
    if missing:
        raise InputError(f"DataFrame: {missing_message(missing, schema, columns, assembled)}")
    absent = [k for k in keep if k not in columns]
    if absent:
        raise UsageError(f"--keep column(s) {', '.join(absent)} not in the DataFrame: {', '.join(columns)}")


def _sample(
    frame: Any, predictor: Predictor, plan: ModelPlan, allow_missing: Any
) -> dict[str, np.ndarray] | None:
    """The first rows' outputs, predicted on the driver (the type of an output of unknown rank)."""
    first = frame.limit(SAMPLE_ROWS)
    table = first.toArrow() if hasattr(first, "toArrow") else pa.Table.from_pandas(first.toPandas())
    if table.num_rows == 0:
        return None
    from .spark_worker import typed_columns

    batch = typed_columns(table.combine_chunks().to_batches()[0], plan.schema, "DataFrame: ")
    feeds = predictor.convert(batch, allow_missing=allow_missing, assemble=plan.assembled)
    return predictor.predict_feeds(feeds, outputs=plan.selected)


__all__ = [
    "SAMPLE_ROWS",
    "ModelPlan",
    "job_schema",
    "load_options",
    "plan_model",
    "predict",
    "predict_udf",
    "worker_settings",
]
