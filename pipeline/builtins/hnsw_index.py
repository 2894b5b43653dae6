"""Index "hnsw": an approximate HNSW graph (hnswlib), for catalogues of millions.

A search visits a few thousand vectors instead of all of them; its recall@10 against exact
search is measured by bench/query.py. Vectors are replaced and deleted in place (deleted
slots are reused), so the graph follows the catalogue without rebuilds.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..steps import StepSettings

OPTIONS = {"connectivity": 16, "expansion_add": 100, "expansion_search": 512}


class HnswIndex:
    def __init__(self, connectivity: int, expansion_add: int, expansion_search: int):
        self.id = "hnsw"
        self._connectivity = connectivity
        self._expansion_add = expansion_add
        self.expansion_search = expansion_search  # may be changed between searches
        self._graph = None  # made by the first add, when the dimension is known
        self._live = np.zeros(0, dtype=bool)
        self._count = 0

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        if self._graph is None:
            import hnswlib  # compiled extension: loaded only when this index is used

            self._graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
            self._graph.init_index(max_elements=max(len(keys), 1024), M=self._connectivity,
                                   ef_construction=self._expansion_add,
                                   allow_replace_deleted=True)
            self._graph.set_num_threads(os.cpu_count() or 1)
        end = int(keys.max()) + 1
        if end > len(self._live):
            live = np.zeros(max(end, 2 * len(self._live)), dtype=bool)
            live[: len(self._live)] = self._live
            self._live = live
        new = int(np.count_nonzero(~self._live[keys]))
        needed = self._count + new
        if needed > self._graph.get_max_elements():
            self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
        # An existing key is updated in place; a new one may take a deleted key's slot.
        self._graph.add_items(vectors, keys, replace_deleted=True)
        self._live[keys] = True
        self._count = needed

    def remove(self, keys: np.ndarray) -> None:
        for key in keys:
            self._graph.mark_deleted(int(key))
        self._live[keys] = False
        self._count -= len(keys)

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._count)
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        self._graph.set_ef(max(self.expansion_search, k))
        keys, distances = self._graph.knn_query(vector, k)
        # hnswlib's inner-product distance is 1 - similarity.
        return keys[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)


def _build(settings: StepSettings) -> HnswIndex:
    options = settings.options
    for key in OPTIONS:
        if options[key] < 1:
            raise ConfigError(f"hnsw.{key} must be at least 1")
    return HnswIndex(options["connectivity"], options["expansion_add"], options["expansion_search"])


@hookimpl
def register_indexes(register):
    register("hnsw", _build, OPTIONS)
