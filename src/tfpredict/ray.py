"""tfpredict on Ray Data, for your own pipelines: add a prediction step to a `ray.data.Dataset`.

    import ray
    from tfpredict.ray import predict_dataset

    ds = ray.data.read_parquet("s3://bucket/rows/")
    predictions = predict_dataset(ds, "/models/ctr/export", keep=["id"], workers=8)
    predictions.write_parquet("s3://bucket/predictions/")

Each of the `workers` actors loads the export once (it is shipped through Ray's object store, so the
nodes need no copy of it); batches of `batch_size` rows go through the same Predictor as everywhere else.
`predict_files` is the whole file-to-file job behind `tfpredict predict --engine ray`.
Needs the `ray` extra: pip install 'tfpredict[ray]'.
"""

from __future__ import annotations

from .engines.ray import ActorStats, RayPredictResult, connect, predict_dataset, predict_files

__all__ = ["ActorStats", "RayPredictResult", "connect", "predict_dataset", "predict_files"]
