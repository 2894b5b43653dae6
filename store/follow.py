"""A neighbour index kept in step with a store that another process writes.

A long-lived reader (the UI) loads the index once, then asks the store after each interval
whether anything changed and applies only that, as the service does with what it ingests.
"""

from __future__ import annotations

import threading

from lookalike.pipeline.steps import VectorIndex

from .query import load_index
from .store import Store


class FollowedIndex:
    def __init__(self, store: Store, model: str, vectors: VectorIndex):
        self.store, self.model = store, model
        # Hold while searching or refreshing: the index is shared by every reader thread.
        self.lock = threading.Lock()
        self.version = store.catalogue_version(model)
        self.index = load_index(store, model, vectors)

    def refresh(self) -> bool:
        """Apply what the store changed since the last look; True when anything did.

        Rows written since the last look are re-read (a read that overlaps a write sees it
        again next time, harmlessly); paths the store no longer indexes are forgotten."""
        version = self.store.catalogue_version(self.model)
        if version == self.version:
            return False
        present = set(self.store.indexed_paths(self.model))
        changes = {path: None for path in self.index.paths() if path not in present}
        changes.update(self.store.vectors_written_since(self.model, self.version[1]))
        self.index.update(changes)
        self.version = version
        return True
