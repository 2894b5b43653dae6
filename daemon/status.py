"""What `lookalike status` shows of a running node: its queue, what it embedded, and the last
warning or error it logged; written to the node's row when it changes, at most once a second.
The latest figures are kept for the HTTP server's health and metrics too."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from lookalike.store.nodes import ThisNode

STATUS_SECONDS = 1.0


class LastProblem(logging.Handler):
    """Remembers the last warning or error logged."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {record.getMessage()}"


class StatusReporter:
    def __init__(self, node: ThisNode, clock: Callable[[], float]):
        self.node, self._clock = node, clock
        self.problem = LastProblem()
        self.embedded = 0  # by this node
        self.queue = 0  # files waiting, as of the last turn of the loop
        self.outages = 0  # times the database went away
        self.turned_at = float("-inf")  # on the clock: the last turn of the loop
        self._published: tuple | None = None
        self._published_at = float("-inf")

    def publish(self, queue: int) -> None:
        now = self._clock()
        self.queue, self.turned_at = queue, now
        status = (queue, self.embedded, self.problem.message)
        if status == self._published or now - self._published_at < STATUS_SECONDS:
            return
        self.node.report(*status)
        self._published, self._published_at = status, now
