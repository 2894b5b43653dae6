"""The snapshot: the configured model's vectors, written for other programs after changes.

Three files, each written atomically, in this order:
- ``feature_vectors.npy``: float32 (N, D), read with ``numpy.load(allow_pickle=False)``;
- ``feature_vectors.json``: ``{"model", "paths", "rows", "dimension", "vectors_sha256"}``,
  ``paths`` in the order of the rows, and the sha256 of the .npy it describes;
- ``feature_vectors.pkl`` (the configured name): the pickled dict ``{"paths", "vectors",
  "model"}`` for programs that trust this folder. Unpickling runs whatever a file asks, so
  lookalike itself never unpickles: its reader takes the .npy and the .json, and checks
  every field, the dtype, the shape against the paths and the sizes against the file before
  allocating anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lookalike.base.atomic import atomic_file
from lookalike.base.errors import LookalikeError
from lookalike.store.store import Store

DTYPE = np.dtype("<f4")


class SnapshotError(LookalikeError):
    """The snapshot files are not ones lookalike wrote, or do not belong together."""


def vectors_file(snapshot: Path) -> Path:
    return snapshot.with_suffix(".npy")


def paths_file(snapshot: Path) -> Path:
    return snapshot.with_suffix(".json")


def publish_snapshot(store: Store, model: str, snapshot: Path) -> int:
    """Write ``model``'s stored vectors as the snapshot, record the refresh; returns its size."""
    paths, vectors = store.indexed_vectors(model)
    write_snapshot(snapshot, paths, vectors, model)
    store.set_meta("last_refresh", datetime.now(UTC).isoformat(timespec="seconds"))
    store.set_meta("index_size", str(len(paths)))
    return len(paths)


def write_snapshot(snapshot: Path, paths: list[str], vectors: np.ndarray, model: str) -> None:
    vectors = np.ascontiguousarray(vectors, dtype=DTYPE)
    with atomic_file(vectors_file(snapshot)) as file:
        hashing = _HashingWriter(file)
        np.save(hashing, vectors, allow_pickle=False)
    description = {"model": model, "rows": len(paths), "dimension": int(vectors.shape[1]),
                   "vectors_sha256": hashing.digest.hexdigest(), "paths": list(paths)}
    with atomic_file(paths_file(snapshot)) as file:
        file.write(json.dumps(description, ensure_ascii=False).encode())
    with atomic_file(snapshot) as file:  # streamed: a million vectors are not copied first
        pickle.dump({"paths": list(paths), "vectors": vectors, "model": model}, file,
                    protocol=pickle.HIGHEST_PROTOCOL)


class _HashingWriter:
    """A file that hashes what passes through it (numpy writes the array in chunks)."""

    def __init__(self, file: BinaryIO):
        self._file, self.digest = file, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self._file.write(data)


def read_snapshot(snapshot: Path) -> dict[str, Any]:
    """``{"paths", "vectors", "model"}`` from the .npy and .json beside ``snapshot``; nothing
    from the files is executed, and nothing is allocated beyond what the files hold."""
    description = _read_description(snapshot)
    vectors = _read_vectors(vectors_file(snapshot), description)
    return {"paths": description["paths"], "vectors": vectors, "model": description["model"]}


def _refuse(file: Path, why: str) -> SnapshotError:
    return SnapshotError(f"{file} is not a lookalike snapshot: {why}")


def _read_description(snapshot: Path) -> dict[str, Any]:
    file = paths_file(snapshot)
    try:
        description = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise _refuse(file, str(exc)) from None
    fields = {"model": str, "rows": int, "dimension": int, "vectors_sha256": str, "paths": list}
    if not isinstance(description, dict) or set(description) != set(fields):
        raise _refuse(file, f"expected the fields {', '.join(sorted(fields))}")
    for name, kind in fields.items():
        value = description[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _refuse(file, f"{name} is not a {kind.__name__}")
    paths = description["paths"]
    if not all(isinstance(path, str) for path in paths) or len(paths) != description["rows"]:
        raise _refuse(file, "paths must be rows strings")
    return description


def _read_vectors(file: Path, description: dict[str, Any]) -> np.ndarray:
    rows, dimension = description["rows"], description["dimension"]
    try:
        with open(file, "rb") as f:
            header = _checked_header(f, file, rows, dimension)
            vectors = np.fromfile(f, dtype=DTYPE, count=rows * dimension)
    except (OSError, ValueError) as exc:
        raise _refuse(file, str(exc)) from None
    if vectors.size != rows * dimension:
        raise _refuse(file, "truncated")
    digest = hashlib.sha256(header)
    digest.update(memoryview(vectors))
    if digest.hexdigest() != description["vectors_sha256"]:
        raise _refuse(file, f"its sha256 is not the one in {paths_file(file).name} (rewritten "
                            "while read? read it again)")
    return vectors.reshape(rows, dimension)


def _checked_header(f: BinaryIO, file: Path, rows: int, dimension: int) -> bytes:
    """The .npy header, once it declares float32 (rows, dimension) and the file holds that
    many bytes after it."""
    version = np.lib.format.read_magic(f)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise _refuse(file, f"unsupported .npy version {version}")
    shape, fortran_order, dtype = read_header(f, max_header_size=10_000)
    if dtype != DTYPE or fortran_order or dtype.hasobject:
        raise _refuse(file, f"vectors must be little-endian float32 in C order, not {dtype}")
    if shape != (rows, dimension):
        raise _refuse(file, f"vectors of shape {shape} for {rows} paths of dimension "
                            f"{dimension}")
    offset = f.tell()
    if os.fstat(f.fileno()).st_size != offset + rows * dimension * DTYPE.itemsize:
        raise _refuse(file, "its size does not match its header")
    f.seek(0)
    return f.read(offset)
