"""Writes that are retried until they succeed (a full disk, a folder without permission):
each failure is logged once, however often it is retried, and so is its recovery."""

from __future__ import annotations

import logging
from collections.abc import Hashable

log = logging.getLogger(__name__)


class RetriedWrites:
    def __init__(self):
        self._failing: set[Hashable] = set()

    def failed(self, key: Hashable, message: str) -> None:
        """The write of ``key`` failed with ``message``: logged the first time only."""
        if key not in self._failing:
            log.error("%s (will retry)", message)
            self._failing.add(key)

    def succeeded(self, key: Hashable, what: str) -> None:
        """The write of ``key`` (``what`` was written) worked: say so if it had failed."""
        if key in self._failing:
            self._failing.discard(key)
            log.info("%s written again", what)
