"""Settling: a path is ready once its size, mtime and inode have not changed for a while."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lookalike.base.files import signature


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        return signature(path.stat())
    except OSError:
        return None


class Settler:
    def __init__(self, settle_seconds: float, clock=time.monotonic):
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._pending: dict[Path, tuple[tuple[int, int, int] | None, float]] = {}

    def touch(self, path: str | os.PathLike) -> None:
        """Something happened to ``path``: wait for it to settle again."""
        path = Path(path)
        self._pending[path] = (_signature(path), self._clock())

    def __len__(self) -> int:
        return len(self._pending)

    def pending(self) -> list[Path]:
        return list(self._pending)

    def pop_settled(self) -> list[Path]:
        """Paths unchanged for settle_seconds (a vanished path settles too: it was deleted)."""
        now, settled = self._clock(), []
        for path, (seen, since) in list(self._pending.items()):
            if now - since < self.settle_seconds:
                continue  # every change event touches the path again; look once it is due
            current = _signature(path)
            if current != seen:
                self._pending[path] = (current, now)
            elif now - since >= self.settle_seconds:
                settled.append(path)
                del self._pending[path]
        return settled
