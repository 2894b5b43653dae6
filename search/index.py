"""The neighbour index of one model: image paths over a vector index plugin (integer keys).

It is kept current one change at a time (add, replace, forget a path), so an image arriving in
a catalogue of millions costs one insertion, not a rebuild.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lookalike.pipeline.steps import VectorIndex


@dataclass(frozen=True)
class Neighbour:
    path: str
    similarity: float


class NeighbourIndex:
    def __init__(self, model: str, vector_index: VectorIndex):
        self.model = model
        self._vector_index = vector_index
        self._key_of: dict[str, int] = {}
        self._path_of: dict[int, str] = {}
        self._free: list[int] = []  # keys of forgotten paths, reused so keys stay dense
        self._dimension = 0  # of the vectors, once there are any

    @classmethod
    def restored(cls, model: str, vector_index: VectorIndex, paths_by_key: list[str | None],
                 dimension: int) -> NeighbourIndex:
        """The index over ``vector_index`` as restored from a save: ``paths_by_key`` as
        ``paths_by_key()`` gave it."""
        index = cls(model, vector_index)
        index._dimension = dimension
        index._path_of = {key: path for key, path in enumerate(paths_by_key) if path is not None}
        index._key_of = {path: key for key, path in index._path_of.items()}
        index._free = [key for key, path in enumerate(paths_by_key) if path is None]
        return index

    @property
    def size(self) -> int:
        return len(self._key_of)

    @property
    def vector_index(self) -> VectorIndex:
        return self._vector_index

    @property
    def dimension(self) -> int:
        return self._dimension

    def paths_by_key(self) -> list[str | None]:
        """Each key's path, None for a key free to reuse: what ``restored`` takes."""
        paths: list[str | None] = [None] * (len(self._key_of) + len(self._free))
        for key, path in self._path_of.items():
            paths[key] = path
        return paths

    def paths(self) -> list[str]:
        return list(self._key_of)

    def load(self, paths: list[str], matrix: np.ndarray) -> None:
        """Fill an empty index with many vectors at once (no per-path copies)."""
        assert not self._key_of, "load fills an empty index"
        self._key_of = {path: key for key, path in enumerate(paths)}
        self._path_of = dict(enumerate(paths))
        self._dimension = matrix.shape[1] if paths else 0
        self._vector_index.add(np.arange(len(paths), dtype=np.int64), matrix)

    def update(self, changes: Mapping[str, np.ndarray | None]) -> None:
        """Store each path's new vector, or forget the path where the vector is None."""
        gone = [self._forget(path) for path, vector in changes.items()
                if vector is None and path in self._key_of]
        if gone:
            self._vector_index.remove(np.array(gone, dtype=np.int64))
        added = [(path, vector) for path, vector in changes.items() if vector is not None]
        if added:
            keys = np.array([self._key(path) for path, _ in added], dtype=np.int64)
            self._dimension = len(added[0][1])
            self._vector_index.add(keys, np.stack([vector for _, vector in added]))

    def search(self, vector: np.ndarray, k: int) -> list[Neighbour]:
        """The ``k`` most similar stored images, most similar first."""
        return self.search_many(vector[np.newaxis], k)[0]

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        """``search`` for each of ``vectors`` (m, d), scored together."""
        return [[Neighbour(self._path_of[int(key)], round(float(similarity), 6))
                 for key, similarity in zip(keys, similarities, strict=True)]
                for keys, similarities in self._vector_index.search(vectors, k)]

    def vector(self, path: str) -> np.ndarray | None:
        """The vector stored for ``path``; None when the index does not hold it."""
        key = self._key_of.get(path)
        return None if key is None else self._vector_index.vectors(np.array([key]))[0]

    def _key(self, path: str) -> int:
        key = self._key_of.get(path)
        if key is None:
            key = self._free.pop() if self._free else len(self._key_of)
            self._key_of[path], self._path_of[key] = key, path
        return key

    def _forget(self, path: str) -> int:
        key = self._key_of.pop(path)
        del self._path_of[key]
        self._free.append(key)
        return key
