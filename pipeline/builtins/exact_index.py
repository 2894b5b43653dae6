"""Index "exact": every stored vector is scored by one float32 matrix-vector product.

Keys are rows of a matrix that grows by doubling, so adding a vector costs one row copy.
Exact, and fast while the matrix fits the memory bandwidth budget (about 10 ms at 100,000
vectors on 2 cores); larger catalogues want an approximate index.
"""

from __future__ import annotations

import numpy as np

from ..hookspecs import hookimpl


class ExactIndex:
    id = "exact"

    def __init__(self):
        self._matrix: np.ndarray | None = None  # allocated by the first add
        self._live = np.zeros(0, dtype=bool)
        self._end = 0  # one past the highest key ever stored
        self._count = 0

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        self._reserve(int(keys.max()) + 1, vectors.shape[1])
        self._count += int(np.count_nonzero(~self._live[keys]))
        self._matrix[keys] = vectors
        self._live[keys] = True

    def remove(self, keys: np.ndarray) -> None:
        self._count -= int(np.count_nonzero(self._live[keys]))
        self._live[keys] = False
        self._matrix[keys] = 0.0

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._count)
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self._matrix[: self._end] @ vector
        if self._count < self._end:
            scores[~self._live[: self._end]] = -np.inf
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top, scores[top]

    def _reserve(self, end: int, dimension: int) -> None:
        if self._matrix is None or end > len(self._matrix):
            capacity = max(end, 2 * len(self._live), 1024)
            matrix = np.zeros((capacity, dimension), dtype=np.float32)
            if self._matrix is not None:
                matrix[: self._end] = self._matrix[: self._end]
            live = np.zeros(capacity, dtype=bool)
            live[: self._end] = self._live[: self._end]
            self._matrix, self._live = matrix, live
        self._end = max(self._end, end)


@hookimpl
def register_indexes(register):
    register("exact", lambda settings: ExactIndex())
