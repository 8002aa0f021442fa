"""Engines that run the batch job of `tfpredict predict` somewhere other than this process.

`ray.py`: Ray Data (read files -> predict on an actor pool -> write files), for a cluster of machines.
Nothing here imports Ray at import time: it is an optional extra (`pip install 'tfpredict[ray]'`).
"""
