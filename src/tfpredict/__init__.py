"""tfpredict: fast, explained prediction for TensorFlow Estimator exports and any other SavedModel."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import InputError, ModelLoadError, OutputError, PredictionError, TfpredictError, UsageError

__version__ = "0.1.0"

# Session auto-clustering (xla=True) skips the CPU unless this flag is set, and TensorFlow reads it once, when
# it first sets up its devices: set it before anything imports TensorFlow through us. Sessions without a jit
# level are unaffected.
if "--tf_xla_cpu_global_jit" not in os.environ.get("TF_XLA_FLAGS", ""):
    os.environ["TF_XLA_FLAGS"] = (os.environ.get("TF_XLA_FLAGS", "") + " --tf_xla_cpu_global_jit").strip()

__all__ = [
    "Predictor",
    "PredictResult",
    "predict_files",
    "doctor",
    "errors",
    "TfpredictError",
    "ModelLoadError",
    "InputError",
    "OutputError",
    "PredictionError",
    "UsageError",
    "__version__",
]

# `tfpredict.doctor` is the function, not the package of the same name: importing a subpackage sets the
# parent's attribute to it, so bind the name after that import (doctor/__init__.py imports no TensorFlow).
from .doctor import doctor  # noqa: E402

if TYPE_CHECKING:
    from .pipeline import PredictResult, predict_files
    from .predictor import Predictor

# TensorFlow takes ~3 s to import: load it only when a name that needs it is first used.
_LAZY = {
    "Predictor": ("predictor", "Predictor"),
    "predict_files": ("pipeline", "predict_files"),
    "PredictResult": ("pipeline", "PredictResult"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'tfpredict' has no attribute {name!r}")
