"""A lock many readers may hold at once, or one writer alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SharedLock:
    """Readers share it; a writer waits for the readers inside to leave and keeps new ones
    out meanwhile, so a stream of readers never starves it; readers kept out go in before
    the next writer, so a stream of writers never starves them."""

    def __init__(self):
        self._condition = threading.Condition()
        self._readers = 0
        self._waiting = 0  # readers waiting for a writer to leave
        self._writing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            self._waiting += 1
            self._condition.wait_for(lambda: not self._writing)
            self._waiting -= 1
            self._readers += 1
            if not self._waiting:
                self._condition.notify_all()  # a writer may wait for the waiting to be in
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            # Readers that waited for the last writer go in first, so a writer that takes the
            # lock again at once (a refresh applied in pieces) does not starve them either.
            self._condition.wait_for(lambda: not self._writing and not self._waiting)
            self._writing = True
            self._condition.wait_for(lambda: not self._readers)
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()
