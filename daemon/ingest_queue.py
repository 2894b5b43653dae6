"""The images waiting for ingest: settled paths in arrival order, one batch at a time; paths
whose file vanished, held until the service is idle (a move seen as delete + create then reuses
the vector); and the start-up backlog's progress."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path

from lookalike.base.files import image_stat

log = logging.getLogger(__name__)

# Told (files done, files in all) as the start-up backlog is worked off.
BacklogProgress = Callable[[int, int], None]


class IngestQueue:
    def __init__(self, images_dir: Path, batch_size: int,
                 on_backlog: BacklogProgress | None = None):
        self.images_dir, self.batch_size = images_dir, batch_size
        self._ready: dict[str, None] = {}  # an ordered set
        self._vanished: set[str] = set()
        self._on_backlog = on_backlog
        self._backlog, self._backlog_done = 0, 0

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def backlog_left(self) -> int:
        """Files of the start-up backlog not yet worked off."""
        return self._backlog - self._backlog_done

    def add(self, paths: Iterable[str]) -> None:
        self._ready.update(dict.fromkeys(paths))

    def add_backlog(self, paths: list[str]) -> None:
        """The start-up reconciliation's paths: their progress is told as they go."""
        self.add(paths)
        self._backlog, self._backlog_done = len(paths), 0
        if self._backlog and self._on_backlog:
            self._on_backlog(0, self._backlog)

    def next_batch(self) -> list[str]:
        """Up to a batch of the paths that waited longest whose file is there; the others
        are held as vanished."""
        batch = list(islice(self._ready, self.batch_size))
        for path in batch:
            del self._ready[path]
        present = [path for path in batch if image_stat(self.images_dir, path)]
        self._vanished.update(set(batch) - set(present))
        self._count_backlog(len(batch))
        return present

    def take_vanished(self) -> list[str]:
        """The vanished paths held so far, to be forgotten."""
        gone, self._vanished = sorted(self._vanished), set()
        return gone

    def _count_backlog(self, count: int) -> None:
        if self._backlog_done >= self._backlog:
            return
        self._backlog_done = min(self._backlog, self._backlog_done + count)
        if self._on_backlog:
            self._on_backlog(self._backlog_done, self._backlog)
        if self._backlog_done == self._backlog:
            log.info("reconciled %s", self.images_dir)
