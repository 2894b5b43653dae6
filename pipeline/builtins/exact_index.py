"""Index "exact": every stored vector is scored, and the top k is exact.

Keys are rows of a float32 matrix kept in fixed blocks of 65,536 rows, so adding a vector
never copies the vectors already stored (a growing single matrix would copy 2 GB at a
million). A scan is bound by memory bandwidth, so from COMPACT_FROM vectors on, once the
index is searched more than once, it also keeps an int8 copy of the vectors (faiss's scalar
quantizer, one range for every component: a quarter of the bytes, a SIMD kernel) and scans
that for a few dozen candidates, then ranks them by their float32 vectors: the top k is that
of a float32 scan (bench/query.py measures the recall), at a third to half the time, for 25 %
more memory. Queries asked together are scored by one matrix product (or one faiss search).
"""

from __future__ import annotations

import threading

import numpy as np

from lookalike.base.cores import usable_cores

BLOCK_ROWS = 65_536
# Vectors from which the int8 copy is kept: below, a float32 scan takes a millisecond or two.
COMPACT_FROM = 20_000
# Candidates taken from the int8 scan for each query, at least (4 k when that is more).
CANDIDATES = 40
# Vectors the int8 range is fitted on (evenly spread over the stored ones).
FIT_SAMPLE = 100_000


class ExactIndex:
    id = "exact"
    scores_together = True

    def __init__(self):
        self._blocks: list[np.ndarray] = []
        self._live = np.zeros(0, dtype=bool)
        self._end = 0  # one past the highest key ever stored
        self._count = 0
        self._searched = False
        self._codes = None  # the int8 copy (a faiss index whose positions are the keys)
        self._coded_count = 0  # vectors stored when the copy was made
        self._coding = threading.Lock()  # searches run side by side: one makes the copy

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        if self._end == 0 and np.array_equal(keys, np.arange(len(keys))):
            self._adopt(np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"]))
        else:
            self._reserve(int(keys.max()) + 1, vectors.shape[1])
            self._count += int(np.count_nonzero(~self._live[keys]))
            self._live[keys] = True
            self._write(keys, vectors)
        if self._codes is not None:
            if self._count > 2 * self._coded_count:  # its range was fitted on far fewer
                self._codes = self._coded()
            else:
                self._encode(keys, vectors)

    def remove(self, keys: np.ndarray) -> None:
        self._count -= int(np.count_nonzero(self._live[keys]))
        self._live[keys] = False
        self._write(keys, np.zeros((len(keys), self._blocks[0].shape[1]), dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        k = min(k, self._count)
        if k == 0:
            return [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))] * len(queries)
        if self._codes is None and self._searched and self._count >= COMPACT_FROM:
            # Made at the second search: one query alone (`lookalike query`) reads the
            # float32 vectors once, which costs less than encoding them.
            with self._coding:
                if self._codes is None:
                    self._codes = self._coded()
        self._searched = True
        if self._codes is None:
            return self._scanned(queries, k)
        return self._ranked(queries, k)

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        return np.stack([self._blocks[key // BLOCK_ROWS][key % BLOCK_ROWS] for key in keys])

    def _scanned(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The float32 scan: one matrix product per block scores every query (the vectors,
        read once, are what a scan costs)."""
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

    def _ranked(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Candidates from the int8 copy (forgotten keys left out), ranked by float32."""
        import faiss

        params = None
        if self._count < self._end:  # forgotten keys: a bitmap of the live ones leaves them out
            live = np.packbits(self._live[: self._end], bitorder="little")
            params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(self._end,
                                                                       faiss.swig_ptr(live)))
        _, candidates = self._codes.search(np.ascontiguousarray(queries, dtype=np.float32),
                                           min(self._count, max(CANDIDATES, 4 * k)),
                                           params=params)
        found = []
        for query, keys in zip(queries, candidates, strict=True):
            keys = keys[keys >= 0]
            scores = self.vectors(keys) @ query
            order = np.argsort(-scores, kind="stable")[:k]
            found.append((keys[order], scores[order]))
        return found

    def _coded(self):
        """The int8 copy of every stored row, its range fitted on a sample of them."""
        import faiss

        faiss.omp_set_num_threads(usable_cores())
        dimension = self._blocks[0].shape[1]
        codes = faiss.IndexScalarQuantizer(dimension, faiss.ScalarQuantizer.QT_8bit_uniform,
                                           faiss.METRIC_INNER_PRODUCT)
        live = np.flatnonzero(self._live[: self._end])
        codes.train(self.vectors(live[:: max(1, len(live) // FIT_SAMPLE)]))
        for number, block in enumerate(self._blocks):
            codes.add(block[: min(BLOCK_ROWS, self._end - number * BLOCK_ROWS)])
        self._coded_count = self._count
        return codes

    def _encode(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Write the int8 codes of ``vectors`` under ``keys`` (rows past the copy's end are
        added first)."""
        import faiss

        if self._end > self._codes.ntotal:
            self._codes.add(np.zeros((self._end - self._codes.ntotal, vectors.shape[1]),
                                     dtype=np.float32))
        codes = faiss.rev_swig_ptr(self._codes.codes.data(), self._codes.codes.size())
        codes.reshape(self._codes.ntotal, -1)[keys] = self._codes.sa_encode(
            np.ascontiguousarray(vectors, dtype=np.float32))

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
