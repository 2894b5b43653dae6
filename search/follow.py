"""A neighbour index kept in step with a store that another process writes.

The service (after each batch it writes) and the UI (every few seconds, while the service
writes) load the index once, then ask the store whether anything changed and apply only that.
Searches and refreshes may come from several threads (HTTP requests beside the service loop):
they run side by side (or, for an index that scores queries together, those asked at the same
moment as one batch: search/gathered.py), and wait only while a refresh applies its changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from lookalike.base.shared_lock import SharedLock
from lookalike.pipeline.steps import VectorIndex
from lookalike.search.gathered import GatheredSearches
from lookalike.search.index import Neighbour
from lookalike.search.query import load_index
from lookalike.search.saved import restore_index, save_index
from lookalike.store.store import ROOT_KEY, Store


class FollowedIndex:
    def __init__(self, store: Store, model: str, vector_index: VectorIndex,
                 snapshot: Path | None = None):
        """``snapshot``: where the index may have been saved (search/saved.py): restored
        from there and brought up to date when it can be, else loaded from the store."""
        self.store, self.model = store, model
        self._lock = SharedLock()  # searches read; applying changes writes
        self._refreshing = threading.Lock()  # one refresh at a time, its reads included
        self._search = (GatheredSearches(self._search_now)
                        if getattr(vector_index, "scores_together", False) else self._search_now)
        restored = restore_index(store, model, vector_index, snapshot) if snapshot else None
        self.restored = restored is not None
        if restored:
            self._neighbours, self.generation = restored
            self._saved_generation: int | None = self.generation
            self.refresh()
        else:
            self.generation = store.generation()  # of the store, as the index holds it
            self._neighbours = load_index(store, model, vector_index)
            self._saved_generation = None

    def save(self, snapshot: Path) -> bool:
        """Save the index beside ``snapshot`` where it is of a kind worth saving and changed
        since it was last saved or restored; True when saved. Searches go on meanwhile:
        only a refresh changes the index, and it waits for the save."""
        with self._refreshing:
            if self.generation == self._saved_generation:
                return False
            catalogue = self.store.get_meta(ROOT_KEY)
            if catalogue is None or not save_index(self._neighbours, self.generation, catalogue,
                                                   snapshot):
                return False
            self._saved_generation = self.generation
            return True

    @property
    def size(self) -> int:
        return self._neighbours.size

    def paths(self) -> list[str]:
        with self._lock.reading():
            return self._neighbours.paths()

    def search(self, vector: np.ndarray, k: int) -> list[Neighbour]:
        return self._search(vector[np.newaxis], k)[0]

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        return self._search(vectors, k)

    def _search_now(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        with self._lock.reading():
            return self._neighbours.search_many(vectors, k)

    def vector(self, path: str) -> np.ndarray | None:
        with self._lock.reading():
            return self._neighbours.vector(path)

    def refresh(self) -> bool:
        """Apply what the store changed since the last look; True when anything did.

        Paths removed and rows written since are read back (one changed while this reads is
        read again next time, harmlessly). A reader so far behind that the store no longer
        logs its removals compares every path instead."""
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> bool:
        generation = self.store.generation()
        if generation == self.generation:
            return False
        # Read from the store first: searches wait only while the changes are applied.
        removed = self.store.removed_since(self.generation)
        if removed is None:
            present = set(self.store.indexed_paths(self.model))
            removed = [path for path in self.paths() if path not in present]
        written = self.store.written_since(self.model, self.generation)
        with self._lock.writing():
            self._neighbours.update(dict.fromkeys(removed))
            self._neighbours.update(written)
            self.generation = generation
        return True
