"""Index "exact": every stored vector is scored by float32 matrix-vector products.

Keys are rows of a matrix kept in fixed blocks of 65,536 rows, so adding a vector never
copies the vectors already stored (a growing single matrix would copy 2 GB at a million).
Exact, and fast while a full scan fits the memory bandwidth (about 10 ms at 100,000 vectors
on 2 cores); larger catalogues want the approximate "hnsw" index.
"""

from __future__ import annotations

import numpy as np

from lookalike.pipeline.hookspecs import hookimpl

BLOCK_ROWS = 65_536


class ExactIndex:
    id = "exact"

    def __init__(self):
        self._blocks: list[np.ndarray] = []
        self._live = np.zeros(0, dtype=bool)
        self._end = 0  # one past the highest key ever stored
        self._count = 0

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        if self._end == 0 and np.array_equal(keys, np.arange(len(keys))):
            self._adopt(np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"]))
            return
        self._reserve(int(keys.max()) + 1, vectors.shape[1])
        self._count += int(np.count_nonzero(~self._live[keys]))
        self._live[keys] = True
        self._write(keys, vectors)

    def remove(self, keys: np.ndarray) -> None:
        self._count -= int(np.count_nonzero(self._live[keys]))
        self._live[keys] = False
        self._write(keys, np.zeros((len(keys), self._blocks[0].shape[1]), dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        k = min(k, self._count)
        if k == 0:
            return [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))] * len(queries)
        # One matrix product per block scores every query: the vectors, read once, are what
        # a scan costs (memory bandwidth), so m queries together cost little more than one.
        scores = np.empty((self._end, len(queries)), dtype=np.float32)
        for number, block in enumerate(self._blocks):
            start = number * BLOCK_ROWS
            rows = min(BLOCK_ROWS, self._end - start)
            np.matmul(block[:rows], queries.T, out=scores[start:start + rows])
        if self._count < self._end:
            scores[~self._live[: self._end]] = -np.inf
        found = []
        for column in scores.T:
            top = np.argpartition(-column, k - 1)[:k]
            top = top[np.argsort(-column[top], kind="stable")]
            found.append((top, column[top]))
        return found

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        return np.stack([self._blocks[key // BLOCK_ROWS][key % BLOCK_ROWS] for key in keys])

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        blocks = keys // BLOCK_ROWS
        for number in np.unique(blocks):
            chosen = blocks == number
            self._blocks[number][keys[chosen] % BLOCK_ROWS] = vectors[chosen]

    def _adopt(self, vectors: np.ndarray) -> None:
        """Fill the empty index with ``vectors`` under keys 0..n-1 without copying them: its
        whole blocks become views of the array (loading a million vectors would otherwise
        take twice their memory and seconds of copying); the rows past the last whole block
        are copied into a block of their own, which later keys fill."""
        whole = len(vectors) // BLOCK_ROWS
        self._blocks = [vectors[number * BLOCK_ROWS:(number + 1) * BLOCK_ROWS]
                        for number in range(whole)]
        self._end = self._count = len(vectors)
        self._reserve(len(vectors), vectors.shape[1])
        if self._end > whole * BLOCK_ROWS:
            self._blocks[whole][: self._end - whole * BLOCK_ROWS] = vectors[whole * BLOCK_ROWS:]
        self._live[: self._end] = True

    def _reserve(self, end: int, dimension: int) -> None:
        while len(self._blocks) * BLOCK_ROWS < end:
            self._blocks.append(np.zeros((BLOCK_ROWS, dimension), dtype=np.float32))
        if end > len(self._live):
            live = np.zeros(len(self._blocks) * BLOCK_ROWS, dtype=bool)
            live[: len(self._live)] = self._live
            self._live = live
        self._end = max(self._end, end)


@hookimpl
def register_indexes(register):
    register("exact", lambda settings: ExactIndex())
