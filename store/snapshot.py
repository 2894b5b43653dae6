"""feature_vectors.pkl: {"paths": [str], "vectors": float32 (N, D), "model": str}.

The snapshot is derived from the store. Loading it admits only the types written here, so a
crafted pickle cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from lookalike.pipeline.errors import LookalikeError

from .atomic import atomic_file

_ALLOWED_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
}


class SnapshotError(LookalikeError):
    """The snapshot file is not one lookalike wrote."""


class _SnapshotUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def write_snapshot(path: Path, paths: list[str], vectors: np.ndarray, model: str) -> None:
    data = {"paths": list(paths), "vectors": np.asarray(vectors, dtype=np.float32), "model": model}
    with atomic_file(path) as file:  # streamed: a million vectors are not copied to bytes first
        pickle.dump(data, file, protocol=pickle.HIGHEST_PROTOCOL)


def read_snapshot(path: Path) -> dict:
    """Load a snapshot without executing anything from the file."""
    try:
        with open(path, "rb") as f:
            data = _SnapshotUnpickler(io.BufferedReader(f)).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise SnapshotError(f"{path} is not a lookalike snapshot: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"paths", "vectors", "model"}:
        raise SnapshotError(f"{path} is not a lookalike snapshot: unexpected content")
    return data
