"""What a process opening a store does, for tests/test_schema.py: run in children of a fork
server (forked from a process with no other threads, so no lock is inherited held), with
SQLAlchemy and the store imported once, before the forks."""

from __future__ import annotations

import os
import signal
import sys
import time
from itertools import count

from sqlalchemy import Engine, event

from lookalike.store.store import Store, StoreError


def open_store(url: str, kill_before: int | None, start_at: float) -> None:
    """Open ``url`` at ``start_at`` on the clock, SIGKILLed just before statement number
    ``kill_before``; exits 0 when the store opened, 1 when it was refused."""
    seen = count()

    def kill(*_):
        if next(seen) == kill_before:
            os.kill(os.getpid(), signal.SIGKILL)

    event.listen(Engine, "before_cursor_execute", kill)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        Store(url).close()
    except StoreError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
