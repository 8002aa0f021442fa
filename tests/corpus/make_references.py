"""Reference outputs for the corpus from plain TensorFlow (a v1 Session over each signature), not tfpredict.

    python tests/corpus/make_references.py [--corpus DIR] [--only NAME ...] [--missing]

Writes tests/corpus/references/NAME.json: {"rows": n, "tensorflow": {signature: version},
"signatures": {signature: {output: nested list}}, "errors": {signature: first line}}. Serialized-tf.Example
signatures are fed tf.train.Example protos built from the data file's cells (types from the export's own parse
ops, empty cells left out); raw signatures are fed their tensors. --missing keeps what an earlier run (perhaps
with another TensorFlow) computed and fills in only the signatures still without a reference. Runs on
TensorFlow 1.15 (Python 3.7) to 2.21.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

HERE = Path(__file__).resolve().parent
_NP = {"float": np.float32, "double": np.float64, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with open(str(path), newline="") as f:
        return list(csv.DictReader(f))


def _int(cell) -> int:
    try:
        return int(cell)
    except ValueError:
        return int(float(cell))


def example(row: dict, features: dict) -> bytes:
    feats = {}
    for key, spec in features.items():
        cell = row.get(key)
        if cell is None or cell == "":
            continue
        if spec["dtype"] == "float":
            feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(cell)]))
        elif spec["dtype"] == "int64":
            feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[_int(cell)]))
        else:
            feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(cell).encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def tensor(rows: list[dict], column: str, spec: dict) -> np.ndarray:
    cells = [row[column] for row in rows]
    if spec["dtype"] == "string":
        value = np.array([str(c).encode() for c in cells], dtype=object)
    elif spec["dtype"] in ("int64", "int32"):
        value = np.array([_int(c) if isinstance(c, str) else c for c in cells], dtype=_NP[spec["dtype"]])
    else:
        value = np.array([float(c) if isinstance(c, str) else c for c in cells], dtype=_NP[spec["dtype"]])
    shape = spec["shape"]
    if shape is not None and len(shape) > 1 and -1 not in shape[1:]:
        value = value.reshape([len(rows)] + shape[1:])
    return value


def to_json(value: np.ndarray):
    if value.dtype.kind in "OSU":
        return np.vectorize(
            lambda v: v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v),
            otypes=[object],
        )(value).tolist()
    return value.astype(np.float64).tolist() if value.dtype.kind == "f" else value.tolist()


def first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def compute(entry: dict, corpus: Path, only_sigs: list[str] | None) -> tuple[dict, dict]:
    export = corpus / entry["name"] / "export"
    rows = read_rows(corpus / entry["name"] / entry["data_file"])
    got, errors = {}, {}
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, entry["tags"], str(export))
        for name, sig in entry["signatures"].items():
            if not sig["row_taking"] or (only_sigs is not None and name not in only_sigs):
                continue
            sdef = meta.signature_def[name]
            try:
                if sig["feed"] == "examples":
                    (key,) = sig["inputs"]
                    feed = {sdef.inputs[key].name: [example(r, entry["example_features"]) for r in rows]}
                else:
                    feed = {sdef.inputs[k].name: tensor(rows, k, spec) for k, spec in sig["inputs"].items()}
                fetch = {k: sdef.outputs[k].name for k in sig["outputs"]}
                out = sess.run(fetch, feed_dict=feed)
                got[name] = {k: to_json(np.asarray(v)) for k, v in out.items()}
            except Exception as e:  # one signature's failure is recorded, the others still run
                errors[name] = first_line(e)
    return got, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("TFPREDICT_CORPUS", str(HERE.parent.parent.parent / "corpus"))
    ap.add_argument("--corpus", default=default)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--missing", action="store_true")
    args = ap.parse_args()
    if tf.__version__.startswith("1."):
        # registers tf.contrib's BucketizeWithInputBoundaries (TF 1.12/1.13 Estimator exports use it)
        import tensorflow.contrib.boosted_trees.python.ops.quantile_ops  # noqa: F401
    manifest = json.loads((HERE / "sources.json").read_text())
    (HERE / "references").mkdir(exist_ok=True)
    for entry in manifest["exports"]:
        if args.only and entry["name"] not in args.only:
            continue
        path = HERE / "references" / (entry["name"] + ".json")
        old = json.loads(path.read_text()) if args.missing and path.is_file() else {}
        todo = None
        if old:
            todo = [
                s
                for s, v in entry["signatures"].items()
                if v["row_taking"] and s not in old.get("signatures", {})
            ]
            if not todo:
                continue
        try:
            got, errors = compute(entry, Path(args.corpus), todo)
        except Exception as e:
            sigs = (
                todo if todo is not None else [s for s, v in entry["signatures"].items() if v["row_taking"]]
            )
            got, errors = {}, {s: "load: " + first_line(e) for s in sigs}
        ref = {
            "rows": len(read_rows(Path(args.corpus) / entry["name"] / entry["data_file"])),
            "tensorflow": dict(old.get("tensorflow", {})),
            "signatures": dict(old.get("signatures", {})),
            "errors": {k: v for k, v in old.get("errors", {}).items() if k not in got},
        }
        for sig, out in got.items():
            ref["signatures"][sig] = out
            ref["tensorflow"][sig] = tf.__version__
        for sig, err in errors.items():
            ref["errors"][sig] = f"TF {tf.__version__}: {err}"
        path.write_text(json.dumps(ref, sort_keys=True) + "\n")
        print(
            f"{entry['name']:34} ok {','.join(sorted(got)):50} errors {json.dumps(errors)[:400]}", flush=True
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
