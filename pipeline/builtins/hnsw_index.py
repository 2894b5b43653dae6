"""Index "hnsw": an approximate HNSW graph (hnswlib), for catalogues of millions.

A search visits a few thousand vectors instead of all of them; its recall@10 against exact
search is measured by bench/query.py. Vectors are replaced and deleted in place (deleted
slots are reused), so the graph follows the catalogue without rebuilds.
"""

from __future__ import annotations

import numpy as np

from lookalike.base.cores import usable_cores
from lookalike.base.errors import ConfigError
from lookalike.pipeline.hookspecs import hookimpl
from lookalike.pipeline.steps import StepSettings

OPTIONS = {"connectivity": 16, "expansion_add": 100, "expansion_search": 512}
HELP = {"connectivity": "links per vector in the graph (M): more, closer to exact, more memory",
        "expansion_add": "candidates weighed while adding (ef_construction)",
        "expansion_search": "candidates weighed while searching: higher, closer to exact search, "
                            "slower"}


class HnswIndex:
    def __init__(self, connectivity: int, expansion_add: int, expansion_search: int):
        self.id = "hnsw"
        self._connectivity = connectivity
        self._expansion_add = expansion_add
        self.expansion_search = expansion_search  # may be changed between searches
        self._graph = None  # made by the first add, when the dimension is known
        # hnswlib mishandles a label that is re-added while deleted slots exist (the old
        # vector stays findable), so each stored vector gets a fresh label, never reused.
        self._label_of = np.full(0, -1, dtype=np.int64)  # key -> label, -1: not stored
        self._key_of = np.zeros(0, dtype=np.int64)  # label -> key
        self._next_label = 0
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
            self._graph.set_num_threads(usable_cores())
        self._label_of = _grown(self._label_of, int(keys.max()) + 1, -1)
        labels = self._label_of[keys]
        stored = labels >= 0
        if stored.any():  # replaced in place: a live label is updated by a plain add
            self._graph.add_items(vectors[stored], labels[stored])
        new_keys = keys[~stored]
        if len(new_keys):
            new_labels = np.arange(self._next_label, self._next_label + len(new_keys))
            self._next_label += len(new_keys)
            needed = self._count + len(new_keys)
            if needed > self._graph.get_max_elements():
                self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
            # New labels take the slots of deleted vectors first.
            self._graph.add_items(vectors[~stored], new_labels, replace_deleted=True)
            self._label_of[new_keys] = new_labels
            self._key_of = _grown(self._key_of, self._next_label, 0)
            self._key_of[new_labels] = new_keys
            self._count = needed

    def remove(self, keys: np.ndarray) -> None:
        for label in self._label_of[keys]:
            self._graph.mark_deleted(int(label))
        self._label_of[keys] = -1
        self._count -= len(keys)

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._count)
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        self._graph.set_ef(max(self.expansion_search, k))
        labels, distances = self._graph.knn_query(vector, k)
        # hnswlib's inner-product distance is 1 - similarity.
        return self._key_of[labels[0].astype(np.int64)], (1.0 - distances[0]).astype(np.float32)


    def vectors(self, keys: np.ndarray) -> np.ndarray:
        return np.asarray(self._graph.get_items(self._label_of[keys]), dtype=np.float32)


def _grown(array: np.ndarray, length: int, fill: int) -> np.ndarray:
    """``array`` with at least ``length`` entries, new ones set to ``fill`` (doubling)."""
    if length <= len(array):
        return array
    grown = np.full(max(length, 2 * len(array)), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _build(settings: StepSettings) -> HnswIndex:
    options = settings.options
    for key in OPTIONS:
        if options[key] < 1:
            raise ConfigError(f"hnsw.{key} must be at least 1")
    return HnswIndex(options["connectivity"], options["expansion_add"], options["expansion_search"])


@hookimpl
def register_indexes(register):
    register("hnsw", _build, OPTIONS, HELP)
