"""The export as Ray's actors get it: its version directory as a tar in the object store, unpacked once
per node (so only the inputs and the output need a path every node can reach)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

INSTALL_HINT = "pip install 'tfpredict[ray]'"


def import_ray() -> Any:
    """The `ray` module, or a UsageError with the one-line install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class ExportPackage:
    """An export as the actors get it: its files in Ray's object store (unpacked once per node), or a path
    every node can read as it is (a shared mount)."""

    path: str
    digest: str | None = None
    # [ObjectRef of the tar bytes], in a list so that Ray hands the actor the reference, not the bytes.
    files: list[Any] | None = None

    def materialize(self) -> str:
        """A local directory holding the export, on the node this runs on."""
        if self.files is None or self.digest is None:
            return self.path
        import ray

        base = Path(tempfile.gettempdir()) / "tfpredict-exports"
        final = base / self.digest
        name = Path(self.path).name
        if not (final / name).is_dir():
            base.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{self.digest}.", dir=base))
            with tarfile.open(fileobj=io.BytesIO(ray.get(self.files[0])), mode="r") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.10.12
                    tar.extractall(tmp)  # noqa: S202 - our own archive
            try:
                os.rename(tmp, final)  # atomic: another actor on this node may have won the race
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        return str(final / name)


def package_export(export: str | os.PathLike[str], *, ship: bool = True) -> ExportPackage:
    """Put a local export's version directory into the object store (ship=False: actors load `export`)."""
    if not ship:
        return ExportPackage(str(export))
    ray = import_ray()
    from ..savedmodel import resolve_export_dir

    version_dir = resolve_export_dir(export)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(version_dir), arcname=version_dir.name)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:24]
    return ExportPackage(str(version_dir), digest, [ray.put(data)])


__all__ = ["INSTALL_HINT", "ExportPackage", "import_ray", "package_export"]
