"""Synthetic input rows for the bench_dnn model, identical in every environment.

numpy + pandas only (no TensorFlow), so the TF 2.15 Estimator benchmark and the TF 2.21 tfpredict benchmark
import the same generator and time predictions on the same rows.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

NUMERIC_COLUMNS = tuple(f"f{i}" for i in range(8))
CAT_VOCAB = (
    "amber", "azure", "beige", "black", "brown", "coral", "cream", "cyan", "gold", "gray",
    "green", "indigo", "ivory", "khaki", "lime", "mauve", "navy", "olive", "pink", "teal",
)  # fmt: skip
TOKEN_POOL_SIZE = 4000
COLUMNS = (*NUMERIC_COLUMNS, "cat", "tok")


@lru_cache(maxsize=1)
def token_pool() -> np.ndarray:
    """The fixed pool of distinct lowercase tokens that `tok` values are drawn from (independent of seed)."""
    rng = np.random.default_rng(20240501)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    codes = rng.integers(0, 26, size=(2 * TOKEN_POOL_SIZE, 6))
    words = np.unique(["".join(chars) for chars in letters[codes]])
    return rng.permutation(words)[:TOKEN_POOL_SIZE]


def bench_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """`n` rows with columns f0..f7 (floats, 4 decimals), cat (from CAT_VOCAB), tok (from token_pool())."""
    rng = np.random.default_rng(seed)
    # 4 decimals: the CSV text and the float32 the model sees are the same number on every reader.
    numeric = np.round(rng.normal(size=(n, len(NUMERIC_COLUMNS))), 4)
    frame = pd.DataFrame(numeric, columns=list(NUMERIC_COLUMNS))
    frame["cat"] = np.asarray(CAT_VOCAB, dtype=object)[rng.integers(0, len(CAT_VOCAB), size=n)]
    pool = token_pool().astype(object)
    frame["tok"] = pool[rng.integers(0, len(pool), size=n)]
    return frame


def bench_labels(frame: pd.DataFrame) -> np.ndarray:
    """A learnable 0/1 label for training bench_dnn (not part of the prediction input)."""
    cat_index = frame["cat"].map({c: i for i, c in enumerate(CAT_VOCAB)}).to_numpy()
    score = frame["f0"] + 0.5 * frame["f1"] - frame["f2"] + np.where(cat_index < 10, 0.5, -0.5)
    return (score.to_numpy() > 0).astype(np.int64)


def cpu_model() -> str:
    """The CPU's model name and its widest vector extension (TensorFlow's speed depends on both)."""
    name, flags = "unknown CPU", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == "unknown CPU":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = value
                    break
    except OSError:
        return name
    vectors = "AVX-512" if "avx512f" in flags.split() else "AVX2" if "avx2" in flags.split() else "no AVX2"
    return f"{name} ({vectors})"


def spread(values: list[float]) -> float:
    """How far apart rounds were: (max - min) / median."""
    import statistics

    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0
