"""Engines that run the batch job of `tfpredict predict`, and what every engine shares.

`common.py`: the output-name and --keep checks, the output schema and the first bad row of a batch, used by
the local engine (`tfpredict.pipeline`), Ray's and Spark's alike, so all write the same columns and messages.
`ray.py`: Ray Data (read files -> predict on an actor pool -> write files), for a cluster of machines; its
parts are `ray_export.py` (the export through the object store), `ray_actors.py` (what runs on the actors)
and `ray_datasets.py` (Ray's readers and the prediction step).
`spark.py`: Spark (one DataFrame per file -> mapInArrow with the Predictor -> Spark's writers), for the
clusters where Estimator exports are scored in bulk; its parts are `spark_session.py` (pyspark, Java and the
session), `spark_export.py` (the export through addArchive, the Predictor each Python worker keeps),
`spark_read.py` (Spark's readers), `spark_worker.py` (what runs in the Python workers) and `spark_frames.py`
(the DataFrame API: predict, predict_udf).
Nothing here imports Ray or pyspark at import time: they are optional extras (`pip install
'tfpredict[ray]'`, `'tfpredict[spark]'`).
"""
