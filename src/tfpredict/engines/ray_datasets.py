"""Ray Datasets of a job: the input files read by Ray's own readers with the model's column types, and the
prediction step on an actor pool sized to the cluster."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ..errors import UsageError
from ..features import FeatureSpec
from ..io.files import InputFile
from ..io.types import column_type
from ..predictor import DEFAULT_BATCH_SIZE
from .common import LoadOptions
from .ray_actors import PredictBatches, PredictSettings
from .ray_export import ExportPackage, import_ray, package_export

#: CPUs each of Ray's read and write tasks reserves. Fractional: they mostly wait on files, and a node whose
#: CPUs are taken by predictor actors must still fit them (Ray's default of 1 would deadlock a 1-CPU node).
IO_TASK_CPUS = 0.25


def plan_workers(
    workers: int | None, threads: int | None, num_cpus: float | None = None
) -> tuple[int, int, float]:
    """(actors, TensorFlow threads per actor, CPUs each actor reserves) for the connected cluster.

    By default one actor per node, running TensorFlow on the node's CPUs: one copy of the model per machine,
    and on 2 cores one actor of 2 threads predicts faster than two of 1 (benchmarks/ray_engine.py).
    Reservations leave each node at least one CPU (half of a 1-CPU node) for Ray's read and write tasks:
    an actor pool holding every CPU would starve the readers.
    """
    ray = import_ray()
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, not {threads}")
    node_cpus = [
        float(n["Resources"]["CPU"])
        for n in ray.nodes()
        if n.get("Alive") and n.get("Resources", {}).get("CPU")
    ] or [1.0]
    total, smallest = sum(node_cpus), min(node_cpus)
    if workers is None:
        workers = len(node_cpus) if threads is None else max(1, int(total // threads))
    if threads is None:
        threads = max(1, int(min(smallest, total / workers)))
    if num_cpus is None:
        per_node_room = smallest - min(1.0, smallest / 2)
        room = sum(c - min(1.0, c / 2) for c in node_cpus)
        num_cpus = max(0.01, min(float(threads), per_node_room, room / workers))
    return workers, threads, num_cpus


def predict_dataset(
    ds: Any,
    export: str | os.PathLike[str] | ExportPackage,
    *,
    signature: str | None = None,
    outputs: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    threads: int | None = None,
    inter_op_threads: int | None = None,
    xla: bool = False,
    num_cpus: float | None = None,
    ship_export: bool = True,
    text_lists: bool = False,
    keep_types: dict[str, pa.DataType] | None = None,
    stats: Any = None,
    allow_missing: bool | Sequence[str] = (),
    assembled: dict[str, list[str]] | None = None,
) -> Any:
    """Add a prediction step to a `ray.data.Dataset`: returns the Dataset of `keep` columns + model outputs.

    Runs on an actor pool of `workers` actors (default: one per node of the cluster), each loading the export
    once. ship_export: send the export through the object store (else every node must read `export`).
    Feature columns may come in any type Ray reads (int for a float feature, ...); they are cast to the
    model's types. Nothing runs until the Dataset is consumed (written, iterated, materialized).
    """
    import_ray()
    import ray.data

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    package = export if isinstance(export, ExportPackage) else package_export(export, ship=ship_export)
    workers, threads, num_cpus = plan_workers(workers, threads, num_cpus)
    settings = PredictSettings(
        load=LoadOptions(signature, threads, inter_op_threads, xla, batch_size),
        outputs=tuple(outputs) if outputs else None,
        keep=tuple(dict.fromkeys(keep)),
        text_lists=text_lists,
        keep_types=tuple((keep_types or {}).items()),
        allow_missing=allow_missing if isinstance(allow_missing, bool) else tuple(allow_missing),
        assembled=tuple((k, tuple(v)) for k, v in (assembled or {}).items()),
    )
    return ds.map_batches(
        PredictBatches,
        fn_constructor_kwargs={"export": package, "settings": settings, "stats": stats},
        # Whole blocks, sliced into model calls by the actor: Ray would otherwise concatenate blocks of
        # different files, whose types may differ (CSV text vs Parquet lists, int32 vs int64 ids, ...).
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=num_cpus,
        # Ray Data's default placement for the pool is SPREAD: a job of N actors on N nodes uses them all.
    )


def read_files(
    files: Sequence[InputFile], schema: dict[str, FeatureSpec], keep: Sequence[str], include_paths: bool
) -> Any:
    """The input files as one Dataset, read by Ray's own readers with the model's column types.

    Consecutive files of one format are one read (in order); different formats are a union, which Ray
    does not keep in order.
    """
    groups: list[list[InputFile]] = []
    for f in files:
        if groups and _group_key(groups[-1][0]) == _group_key(f):
            groups[-1].append(f)
        else:
            groups.append([f])
    datasets = [_read_group(g, schema, keep, include_paths) for g in groups]
    return datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])


def _group_key(f: InputFile) -> tuple[str, str | None, bool]:
    return f.format, f.compression, f.is_tsv


def _read_group(
    group: list[InputFile], schema: dict[str, FeatureSpec], keep: Sequence[str], include_paths: bool
) -> Any:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import ray.data

    paths = [str(f.path) for f in group]
    first = group[0]
    stream_args = {"compression": "gzip"} if first.compression else None
    wanted = list(dict.fromkeys([*schema, *keep]))
    if first.format == "csv":
        types = {n: column_type(s, "csv") or pa.string() for n, s in schema.items()}
        types.update({k: pa.string() for k in keep if k not in schema})  # ids pass through as written
        return ray.data.read_csv(
            paths,
            num_cpus=IO_TASK_CPUS,
            include_paths=include_paths,
            arrow_open_stream_args=stream_args,
            parse_options=pacsv.ParseOptions(delimiter=first.delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=wanted,
                include_missing_columns=True,  # an absent optional feature is missing in every row
                strings_can_be_null=True,
            ),
        )
    if first.format == "parquet":
        import pyarrow.parquet as pq

        present = set(pq.read_schema(str(first.path)).names)
        return ray.data.read_parquet(
            paths,
            columns=[n for n in wanted if n in present],
            include_paths=include_paths,
            num_cpus=IO_TASK_CPUS,
        )
    if first.format == "jsonl":
        # Fixed-shape features typed (nested lists for a [3,3] input); var-len ones left to Ray's reader.
        fields = [pa.field(n, column_type(s, "jsonl")) for n, s in schema.items() if s.kind != "varlen"]
        return ray.data.read_json(
            paths,
            num_cpus=IO_TASK_CPUS,
            include_paths=include_paths,
            arrow_open_stream_args=stream_args,
            file_extensions=None,
            parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema(fields), unexpected_field_behavior="infer"
            ),
        )
    return ray.data.read_tfrecords(
        paths, num_cpus=IO_TASK_CPUS, include_paths=include_paths, arrow_open_stream_args=stream_args
    )


__all__ = ["IO_TASK_CPUS", "plan_workers", "predict_dataset", "read_files"]
