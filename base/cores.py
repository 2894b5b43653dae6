"""How many cores this process may use."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process is allowed to run on (``taskset``, a container's cpuset), not
    every core of the machine: a node pinned to one core runs one thread per stage."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
