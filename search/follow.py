"""A neighbour index kept in step with a store that another process writes.

The service (after each batch it writes) and the UI (every few seconds, while the service
writes) load the index once, then ask the store whether anything changed and apply only that.
"""

from __future__ import annotations

import threading

import numpy as np

from lookalike.pipeline.steps import VectorIndex
from lookalike.search.index import Neighbour
from lookalike.search.query import load_index
from lookalike.store.store import Store


class FollowedIndex:
    def __init__(self, store: Store, model: str, vector_index: VectorIndex):
        self.store, self.model = store, model
        # Held by the UI while searching or refreshing: its page threads share the index.
        self.lock = threading.Lock()
        self.generation = store.generation()  # of the store, as the index holds it
        self._neighbours = load_index(store, model, vector_index)

    @property
    def size(self) -> int:
        return self._neighbours.size

    def paths(self) -> list[str]:
        return self._neighbours.paths()

    def search(self, vector: np.ndarray, k: int) -> list[Neighbour]:
        return self._neighbours.search(vector, k)

    def refresh(self) -> bool:
        """Apply what the store changed since the last look; True when anything did.

        Paths removed and rows written since are read back (one changed while this reads is
        read again next time, harmlessly). A reader so far behind that the store no longer
        logs its removals compares every path instead."""
        generation = self.store.generation()
        if generation == self.generation:
            return False
        removed = self.store.removed_since(self.generation)
        if removed is None:
            present = set(self.store.indexed_paths(self.model))
            removed = [path for path in self.paths() if path not in present]
        self._neighbours.update(dict.fromkeys(removed))
        self._neighbours.update(self.store.written_since(self.model, self.generation))
        self.generation = generation
        return True
