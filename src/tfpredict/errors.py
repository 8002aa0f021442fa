"""One error hierarchy: every user mistake is a TfpredictError with a one-line, actionable message."""

from __future__ import annotations


class TfpredictError(Exception):
    """Base of all errors tfpredict raises on purpose.

    The CLI prints `format_message()` as one line and exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def format_message(self) -> str:
        return self.message


class UsageError(TfpredictError):
    """Wrong command-line usage or arguments."""

    exit_code = 2


class ModelLoadError(TfpredictError):
    """The export cannot be found or loaded (not a SavedModel, no such signature, ...)."""

    exit_code = 2


class InputError(TfpredictError):
    """The data given to predict does not fit the model (missing column, wrong dtype or shape, bad file)."""

    exit_code = 2


class OutputError(TfpredictError):
    """The output cannot be written (missing directory, unknown format, ...)."""

    exit_code = 2


class PredictionError(TfpredictError):
    """The model failed while running on valid-looking input."""

    exit_code = 1
