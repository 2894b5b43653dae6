"""Searches asked at the same moment from several threads, answered by one batched search.

The first search to arrive while none runs goes ahead at once; those arriving meanwhile wait,
and when it is done the first of them searches for all of them together. A lone search
waits for nothing, and under load one pass over the vectors answers many requests (the exact
index reads every vector once per batch, not once per query).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lookalike.search.index import Neighbour

# Searches (m, d) query vectors for their k nearest neighbours each.
Search = Callable[[np.ndarray, int], list[list[Neighbour]]]


@dataclass
class _Request:
    vectors: np.ndarray
    k: int
    done: threading.Event = field(default_factory=threading.Event)
    found: list[list[Neighbour]] | None = None
    error: BaseException | None = None


class GatheredSearches:
    def __init__(self, search: Search):
        self._search = search
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._running = False

    def __call__(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        """``search(vectors, k)``, run together with the searches asked meanwhile."""
        request = _Request(vectors, k)
        with self._lock:
            self._waiting.append(request)
            leads, self._running = not self._running, True
        if not leads:
            request.done.wait()  # answered, or handed the lead
        if request.found is None and request.error is None:
            self._search_waiting()
        if request.error is not None:
            raise request.error
        return request.found

    def _search_waiting(self) -> None:
        """Search for every request waiting (this thread's own among them), answer each,
        then hand the lead to the first request that arrived meanwhile."""
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            found = self._search(np.concatenate([r.vectors for r in batch]),
                                 max(r.k for r in batch))
            start = 0
            for request in batch:
                end = start + len(request.vectors)
                request.found = [neighbours[:request.k] for neighbours in found[start:end]]
                start = end
        except BaseException as exc:  # each caller raises it, as its own search would
            for request in batch:
                request.error = exc
        with self._lock:
            following = self._waiting[0] if self._waiting else None
            self._running = following is not None
        for request in batch:
            request.done.set()
        if following is not None:
            following.done.set()
