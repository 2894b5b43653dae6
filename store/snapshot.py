"""The snapshot: the configured model's vectors, written for other programs after changes.

Three files, each written atomically, in this order:
- ``feature_vectors.json``: ``{"model", "generation", "rows", "dimension", "vectors_sha256",
  "paths", "previous"}``: the store's write generation it reflects, ``paths`` in the order of
  the rows, the sha256 of the .npy it describes, and the description of the .npy it replaces
  (renamed into place before the .npy: a crash between the two leaves a readable pair);
- ``feature_vectors.npy``: float32 (N, D), read with ``numpy.load(allow_pickle=False)``;
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
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lookalike.base.atomic import atomic_file, atomic_path
from lookalike.base.errors import LookalikeError
from lookalike.store.store import Store, VectorChunk

DTYPE = np.dtype("<f4")
# The .npy header's length, fixed so that it can be rewritten in place (a multiple of 64).
HEADER_BYTES = 128


class SnapshotError(LookalikeError):
    """The snapshot files are not ones lookalike wrote, or do not belong together."""


def vectors_file(snapshot: Path) -> Path:
    return snapshot.with_suffix(".npy")


def paths_file(snapshot: Path) -> Path:
    return snapshot.with_suffix(".json")


def publish_snapshot(store: Store, model: str, snapshot: Path) -> int:
    """Write ``model``'s stored vectors as the snapshot, streamed from the store a chunk at a
    time (the writer never holds the vectors whole: a million are 2 GB), and record the
    refresh; returns its size."""
    generation = store.generation()  # before the read: the snapshot holds at least this
    with store.vector_chunks(model) as (count, chunks):
        size = _write(snapshot, model, generation, count, chunks)
    store.set_meta("last_refresh", datetime.now(UTC).isoformat(timespec="seconds"))
    store.set_meta("index_size", str(size))
    return size


def write_snapshot(snapshot: Path, paths: list[str], vectors: np.ndarray, model: str,
                   generation: int) -> None:
    """The snapshot of ``vectors`` (N, D) under ``paths``, as of the store's ``generation``."""
    _write(snapshot, model, generation, len(paths), iter([(list(paths), vectors)]))


def snapshot_generation(snapshot: Path, model: str) -> int | None:
    """The store generation the snapshot reflects, where its three files hold ``model``'s
    vectors and were all written: the .pkl, written last, is not older than the .json,
    written first (a crash between them leaves it older); else None (write it)."""
    try:
        description = _read_description(snapshot)
        written = paths_file(snapshot).stat().st_mtime_ns <= snapshot.stat().st_mtime_ns
        written = written and vectors_file(snapshot).exists()
    except (SnapshotError, OSError):
        return None
    whole = written and description["model"] == model
    return description["generation"] if whole else None


def _write(snapshot: Path, model: str, generation: int, count: int,
           chunks: Iterator[VectorChunk]) -> int:
    """The three files; rows beyond ``count`` are left to the next snapshot (they are newer
    than ``generation``). Returns the rows written.

    Two files cannot be renamed into place at once, so the .json goes first, describing the
    new .npy and, as ``previous``, the one still in place: a reader finds a description
    of whichever .npy it reads, even after a crash between the two renames."""
    with atomic_path(vectors_file(snapshot)) as temp:
        paths, dimension, digest = _stream_vectors(temp, count, chunks)
        # Copy-on-write: unpickled, the vectors are a writable array, as they always were;
        # nothing is written to them here, so nothing is copied.
        vectors = np.load(temp, mmap_mode="c")
        try:
            previous = _read_description(snapshot)
            previous["previous"] = None
        except SnapshotError:
            previous = None
        description = {"model": model, "generation": generation, "rows": len(paths),
                       "dimension": dimension, "vectors_sha256": digest, "paths": paths,
                       "previous": previous}
        with atomic_file(paths_file(snapshot)) as file:
            file.write(json.dumps(description, ensure_ascii=False).encode())
    with atomic_file(snapshot) as file:  # streamed from the .npy, mapped: not read into memory
        pickle.dump({"paths": paths, "vectors": np.asarray(vectors), "model": model}, file,
                    protocol=pickle.HIGHEST_PROTOCOL)
    return len(paths)


def _stream_vectors(temp: Path, count: int,
                    chunks: Iterator[VectorChunk]) -> tuple[list[str], int, str]:
    """Write the .npy of ``count`` rows from ``chunks``; its paths, dimension and sha256.
    Where fewer rows came (deleted meanwhile), the header is rewritten in place (it has a
    fixed length) and the file hashed again."""
    paths: list[str] = []
    dimension = 0
    digest = hashlib.sha256()
    with open(temp, "wb") as file:
        file.write(b"\0" * HEADER_BYTES)  # the header, once the dimension is known
        for chunk, values in chunks:
            if not dimension:
                dimension = values.shape[1]
                digest.update(_npy_header(count, dimension))
            fits = min(len(chunk), count - len(paths))
            if fits <= 0:
                break
            data = memoryview(np.ascontiguousarray(values[:fits], dtype=DTYPE)).cast("B")
            file.write(data)
            digest.update(data)
            paths.extend(chunk[:fits])
        file.seek(0)
        file.write(_npy_header(len(paths), dimension))
    if not paths or len(paths) != count:
        digest = hashlib.sha256()
        with open(temp, "rb") as file:
            while data := file.read(2**22):
                digest.update(data)
    return paths, dimension, digest.hexdigest()


def _npy_header(rows: int, dimension: int) -> bytes:
    """A .npy (version 1.0) header of float32 (rows, dimension), padded to HEADER_BYTES."""
    text = repr({"descr": DTYPE.str, "fortran_order": False, "shape": (rows, dimension)})
    head = b"\x93NUMPY\x01\x00" + struct.pack("<H", HEADER_BYTES - 10) + text.encode("latin1")
    return head + b" " * (HEADER_BYTES - len(head) - 1) + b"\n"


def read_snapshot(snapshot: Path) -> dict[str, Any]:
    """``{"paths", "vectors", "model"}`` from the .npy and .json beside ``snapshot``; nothing
    from the files is executed, and nothing is allocated beyond what the files hold."""
    description = _read_description(snapshot)
    described = [description] + ([description["previous"]] if description["previous"] else [])
    vectors, description = _read_vectors(vectors_file(snapshot), described)
    return {"paths": description["paths"], "vectors": vectors, "model": description["model"]}


def _refuse(file: Path, why: str) -> SnapshotError:
    return SnapshotError(f"{file} is not a lookalike snapshot: {why}")


def _read_description(snapshot: Path) -> dict[str, Any]:
    file = paths_file(snapshot)
    try:
        description = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise _refuse(file, str(exc)) from None
    _check_description(file, description)
    if description["previous"] is not None:
        _check_description(file, description["previous"])
    return description


def _check_description(file: Path, description: Any) -> None:
    fields = {"model": str, "generation": int, "rows": int, "dimension": int,
              "vectors_sha256": str, "paths": list, "previous": (dict, type(None))}
    if not isinstance(description, dict) or set(description) != set(fields):
        raise _refuse(file, f"expected the fields {', '.join(sorted(fields))}")
    for name, kind in fields.items():
        value = description[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _refuse(file, f"{name} is not a {getattr(kind, '__name__', 'dict')}")
    paths = description["paths"]
    if not all(isinstance(path, str) for path in paths) or len(paths) != description["rows"]:
        raise _refuse(file, "paths must be rows strings")


def _read_vectors(file: Path, described: list[dict[str, Any]]) -> tuple[np.ndarray,
                                                                          dict[str, Any]]:
    """The vectors of the .npy, and the description (of ``described``) they match."""
    try:
        with open(file, "rb") as f:
            header, (rows, dimension) = _checked_header(f, file)
            matching = [d for d in described if (d["rows"], d["dimension"]) == (rows, dimension)]
            if not matching:
                raise _refuse(file, f"vectors of shape {(rows, dimension)} for "
                                    f"{described[0]['rows']} paths of dimension "
                                    f"{described[0]['dimension']}")
            if os.fstat(f.fileno()).st_size != len(header) + rows * dimension * DTYPE.itemsize:
                raise _refuse(file, "its size does not match its header")
            vectors = np.fromfile(f, dtype=DTYPE, count=rows * dimension)
    except (OSError, ValueError) as exc:
        raise _refuse(file, str(exc)) from None
    if vectors.size != rows * dimension:
        raise _refuse(file, "truncated")
    digest = hashlib.sha256(header)
    digest.update(memoryview(vectors))
    for description in matching:
        if digest.hexdigest() == description["vectors_sha256"]:
            return vectors.reshape(rows, dimension), description
    raise _refuse(file, f"its sha256 is not the one in {paths_file(file).name} (rewritten "
                        "while read? read it again)")


def _checked_header(f: BinaryIO, file: Path) -> tuple[bytes, tuple[int, int]]:
    """The .npy header and the (rows, dimension) it declares, once it declares float32 in
    two dimensions."""
    version = np.lib.format.read_magic(f)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise _refuse(file, f"unsupported .npy version {version}")
    shape, fortran_order, dtype = read_header(f, max_header_size=10_000)
    if dtype != DTYPE or fortran_order or dtype.hasobject:
        raise _refuse(file, f"vectors must be little-endian float32 in C order, not {dtype}")
    if len(shape) != 2:
        raise _refuse(file, f"vectors of shape {shape}: not (rows, dimension)")
    offset = f.tell()
    f.seek(0)
    return f.read(offset), shape
