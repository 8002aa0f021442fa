"""Writes the generated data rows of the corpus exports whose source repos hold no usable rows.

    python tests/corpus/prepare_data.py CORPUS_DIR

For every export of sources.json whose `data` is "generated", writes CORPUS_DIR/NAME/DATA_FILE (data.csv or
data.jsonl, as sources.json says). Stdlib only and deterministic: one random.Random(11) draws, in this order,
40 `x` uniform in [-50, 50] (with `x2 = 2x - 1` and `inputs = x + 3`; the TF Serving half_plus_* exports),
40 3x3 matrices uniform in [-10, 10] (matrix_half_plus_two), 40 rows of 11 standard normals (the qwikstart
model's preprocessed census features), 40 babyweight rows for the Estimators (their trainer's vocabularies,
plurality a number) and 40 for the Keras babyweight models (plurality "Single(1)", "Twins(2)" or
"Triplets(3)", `is_male` also "Unknown"). The rows the exports share come from one draw. Data taken from
repo files (the taxi, iris, penguin and kubeflow exports) is not written here: see README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = 40
Row = dict[str, object]

# cloudml-samples cloudml-template/examples/regression/babyweight/trainer/metadata.py
MOTHER_RACE = [
    "White",
    "Black",
    "American Indian",
    "Chinese",
    "Japanese",
    "Hawaiian",
    "Filipino",
    "Unknown",
    "Asian Indian",
    "Korean",
    "Samaon",
    "Vietnamese",
]
TRUE_FALSE = ["True", "False"]
TRUE_FALSE_NONE = ["True", "False", "None"]
PLURALITY_KERAS = ["Single(1)", "Twins(2)", "Triplets(3)"]


def half_plus_rows(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for _ in range(ROWS):
        x = round(rng.uniform(-50, 50), 3)
        rows.append({"x": x, "x2": round(2 * x - 1, 3), "inputs": round(x + 3, 3)})
    return rows


def matrix_rows(rng: random.Random) -> list[Row]:
    return [
        {"x": [[round(rng.uniform(-10, 10), 3) for _ in range(3)] for _ in range(3)]} for _ in range(ROWS)
    ]


def normal_rows(rng: random.Random) -> list[Row]:
    return [{"dense_input": [round(rng.gauss(0.0, 1.0), 4) for _ in range(11)]} for _ in range(ROWS)]


def babyweight_estimator_rows(rng: random.Random) -> list[Row]:
    return [
        {
            "is_male": rng.choice(TRUE_FALSE),
            "mother_age": float(rng.randint(15, 45)),
            "mother_race": rng.choice(MOTHER_RACE),
            "plurality": float(rng.randint(1, 3)),
            "gestation_weeks": float(rng.randint(28, 42)),
            "mother_married": rng.choice(TRUE_FALSE),
            "cigarette_use": rng.choice(TRUE_FALSE_NONE),
            "alcohol_use": rng.choice(TRUE_FALSE_NONE),
        }
        for _ in range(ROWS)
    ]


def babyweight_keras_rows(rng: random.Random) -> list[Row]:
    return [
        {
            "is_male": rng.choice(TRUE_FALSE + ["Unknown"]),
            "mother_age": float(rng.randint(15, 45)),
            "plurality": rng.choice(PLURALITY_KERAS),
            "gestation_weeks": float(rng.randint(28, 42)),
        }
        for _ in range(ROWS)
    ]


# drawn in this order from one random.Random(11); each export gets the columns it reads
DATASETS: list[tuple[str, Callable[[random.Random], list[Row]]]] = [
    ("half_plus", half_plus_rows),
    ("matrix", matrix_rows),
    ("normal", normal_rows),
    ("babyweight_estimator", babyweight_estimator_rows),
    ("babyweight_keras", babyweight_keras_rows),
]
BABYWEIGHT_ESTIMATOR_COLUMNS = [
    "is_male",
    "mother_age",
    "mother_race",
    "plurality",
    "gestation_weeks",
    "mother_married",
    "cigarette_use",
    "alcohol_use",
]
BABYWEIGHT_KERAS_COLUMNS = ["is_male", "mother_age", "plurality", "gestation_weeks"]
EXPORTS: dict[str, tuple[str, list[str]]] = {
    "serving_half_plus_two_cpu": ("half_plus", ["x", "x2", "inputs"]),
    "serving_half_plus_two_mlmd": ("half_plus", ["x", "x2", "inputs"]),
    "serving_half_plus_two_tf2_cpu": ("half_plus", ["x", "x2", "inputs"]),
    "serving_half_plus_three": ("half_plus", ["x", "inputs"]),
    "serving_matrix_half_plus_two": ("matrix", ["x"]),
    "tda_qwikstart_keras": ("normal", ["dense_input"]),
    "cloudml_housing_regressor": ("babyweight_estimator", BABYWEIGHT_ESTIMATOR_COLUMNS),
    "tda_dataflow_serving_v1": ("babyweight_estimator", BABYWEIGHT_ESTIMATOR_COLUMNS),
    "tda_babyweight_20220204091019": ("babyweight_keras", BABYWEIGHT_KERAS_COLUMNS),
    "tda_babyweight_20220204091627": ("babyweight_keras", BABYWEIGHT_KERAS_COLUMNS),
    "tda_babyweight_20220204094559": ("babyweight_keras", BABYWEIGHT_KERAS_COLUMNS),
}


def write(path: Path, rows: list[Row], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picked = [{c: row[c] for c in columns} for row in rows]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in picked))
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(picked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path, help="the corpus directory (holding NAME/export/)")
    args = ap.parse_args()
    manifest = json.loads((HERE / "sources.json").read_text())
    generated = {e["name"]: e["data_file"] for e in manifest["exports"] if "generated" in e["data"]}
    if set(generated) != set(EXPORTS):
        raise SystemExit(
            f"sources.json's generated exports differ from EXPORTS: {sorted(set(generated) ^ set(EXPORTS))}"
        )
    rng = random.Random(11)
    data = {name: make(rng) for name, make in DATASETS}
    for name, (dataset, columns) in EXPORTS.items():
        path = args.corpus / name / generated[name]
        write(path, data[dataset], columns)
        print(f"{path}: {len(data[dataset])} rows")


if __name__ == "__main__":
    main()
