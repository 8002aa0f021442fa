"""Engines that run the batch job of `tfpredict predict`, and what every engine shares.

`common.py`: the output-name and --keep checks, the output schema and the first bad row of a batch, used by
the local engine (`tfpredict.pipeline`) and Ray's alike, so both write the same columns and messages.
`ray.py`: Ray Data (read files -> predict on an actor pool -> write files), for a cluster of machines; its
parts are `ray_export.py` (the export through the object store), `ray_actors.py` (what runs on the actors)
and `ray_datasets.py` (Ray's readers and the prediction step).
Nothing here imports Ray at import time: it is an optional extra (`pip install 'tfpredict[ray]'`).
"""
