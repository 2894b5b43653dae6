"""Index "hnsw": an approximate HNSW graph (usearch), for catalogues of millions.

A search visits a few thousand vectors instead of all of them; its recall@10 against exact
search is measured by bench/query.py. Vectors are kept as float16 (half the memory; the
recall is the same as float32's there). Vectors are replaced and deleted in place (deleted
slots are reused), so the graph follows the catalogue without rebuilds, and the graph is
saved and restored whole, so a service starts without building it again.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from pathlib import Path

import numpy as np

from lookalike.base.cores import usable_cores
from lookalike.base.errors import ConfigError
from lookalike.base.forked import in_child
from lookalike.pipeline.steps import StepSettings

SCALAR = "f16"
PARALLEL_FROM = 10_000  # vectors in the graph before several threads add at once


class HnswIndex:
    def __init__(self, connectivity: int, expansion_add: int, expansion_search: int):
        self.id = "hnsw"
        self._connectivity = connectivity
        self._expansion_add = expansion_add
        self.expansion_search = expansion_search  # may be changed between searches
        self._graph = None  # made by the first add or restore, when the dimension is known

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        if self._graph is None:
            self._graph = self._new_graph(vectors.shape[1])
        stored = self._graph.contains(keys)
        if stored.any():  # a key is added once: a replaced vector is removed first
            self._graph.remove(keys[stored])
        # Vectors inserted side by side do not see each other: in a small graph that leaves
        # some unreachable, so the first ones go in one at a time.
        alone = max(0, min(len(keys), PARALLEL_FROM - len(self._graph)))
        if alone:
            self._graph.add(keys[:alone], vectors[:alone], threads=1)
        if alone < len(keys):
            self._graph.add(keys[alone:], vectors[alone:], threads=usable_cores())

    def remove(self, keys: np.ndarray) -> None:
        self._graph.remove(keys)

    def search(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        k = min(k, 0 if self._graph is None else len(self._graph))
        if k == 0:
            return [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))] * len(queries)
        self._graph.expansion_search = max(self.expansion_search, k)
        found = self._graph.search(queries, k, threads=usable_cores() if len(queries) > 1 else 1)
        # One query's Matches, or BatchMatches whose rows are each query's Matches; the
        # inner-product distance is 1 - similarity.
        each = [found] if len(queries) == 1 else [found[i] for i in range(len(queries))]
        return [(matches.keys.astype(np.int64), (1.0 - matches.distances).astype(np.float32))
                for matches in each]

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        return np.stack(self._graph.get(keys, dtype=np.float32))

    def save(self, path: Path) -> None:
        """Write the graph, with its vectors, to ``path``, from a forked child where the
        system forks: usearch holds the GIL while it writes (3.4 s at a million), which would
        stop the service's HTTP answers and ingest meanwhile."""
        in_child(lambda: self._graph.save(str(path)))

    def restore(self, path: Path, dimension: int) -> str | None:
        """Replace the graph with the one saved in ``path``; None when restored, else why it
        cannot be used (built with other settings, or not a graph at all)."""
        load_shared_cpp_runtime()
        from usearch.index import Index

        try:
            saved = Index.metadata(str(path))
        except (ValueError, RuntimeError) as exc:
            return f"not a saved graph ({exc})"
        if saved is None or saved["dimensions"] != dimension \
                or saved["kind_scalar"].name.lower() != SCALAR:
            return "saved for another dimension or precision"
        graph = self._new_graph(dimension)
        try:
            graph.load(str(path))
        except (ValueError, RuntimeError) as exc:
            return f"damaged ({exc})"
        if graph.connectivity != self._connectivity:
            return f"built with connectivity {graph.connectivity}, not {self._connectivity}"
        self._graph = graph
        return None

    def _new_graph(self, dimension: int):
        load_shared_cpp_runtime()
        from usearch.index import Index  # compiled extension: loaded only when this index is used

        return Index(ndim=dimension, metric="ip", dtype=SCALAR, connectivity=self._connectivity,
                     expansion_add=self._expansion_add, expansion_search=self.expansion_search)


def load_shared_cpp_runtime() -> None:
    """Load the system's C++ runtime before usearch, whose Linux wheel carries its own copy
    linked in: loaded first, that copy serves torch's later stream calls and torch's ONNX
    export never returns (pytorch/pytorch#109923)."""
    if sys.platform.startswith("linux"):
        # None installed: torch, which needs it, is not either.
        with contextlib.suppress(OSError):
            ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)


def built(settings: StepSettings) -> HnswIndex:
    """The index of the [hnsw] table."""
    options = settings.options
    for key, value in options.items():
        if value < 1:
            raise ConfigError(f"hnsw.{key} must be at least 1")
    return HnswIndex(options["connectivity"], options["expansion_add"], options["expansion_search"])
