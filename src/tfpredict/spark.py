"""tfpredict on Spark, for your own jobs: predictions of a `pyspark.sql.DataFrame`, or a UDF for `select`.

    from tfpredict.spark import predict, predict_udf

    rows = spark.read.parquet("s3://bucket/rows/")
    predict(rows, "/models/ctr/export", keep=["id"]).write.parquet("s3://bucket/predictions/")

    score = predict_udf("/models/ctr/export", outputs=["logistic"])
    rows.withColumn("p", score()).select("id", "p.logistic")

The export is shipped to the executors (SparkContext.addArchive: the nodes need no copy of it); each Python
worker loads it once and keeps it for every later task. `predict_files` is the whole file-to-file job
behind `tfpredict predict --engine spark`. Needs the `spark` extra and Java: pip install 'tfpredict[spark]'.
"""

from __future__ import annotations

from .engines.spark import SparkPredictResult, predict_files
from .engines.spark_frames import predict, predict_udf
from .engines.spark_worker import WorkerStats, stats_accumulator

__all__ = [
    "SparkPredictResult",
    "WorkerStats",
    "predict",
    "predict_files",
    "predict_udf",
    "stats_accumulator",
]
