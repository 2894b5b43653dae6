"""Retrying later: what is due again when (``RetryTimes``), and writes that fail until they
work, each failure logged once however often it is retried (``RetriedWrites``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class RetryTimes:
    """Things to try again, each at its own time on ``clock``."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._due: dict[Hashable, float] = {}

    def later(self, key: Hashable, seconds: float) -> None:
        """Try ``key`` again ``seconds`` from now."""
        self._due[key] = self._clock() + seconds

    def pop_due(self) -> list[Hashable]:
        """The keys whose time has come, forgotten here."""
        now = self._clock()
        due = [key for key, at in self._due.items() if now >= at]
        for key in due:
            del self._due[key]
        return due

    def __len__(self) -> int:
        return len(self._due)


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
