"""Run a long call that holds Python's GIL in a forked child, so that the process's other
threads go on meanwhile.

usearch holds the GIL while it writes its graph: 3.4 s at a million vectors, during which
every other thread of the service (HTTP answers, ingest) would stand still. A child made by
fork() holds a copy of the memory as it was at the fork, writes from it and exits; the calling
thread waits for it without the GIL. Safe here because the child runs only ``call``: the
threads that fork() leaves behind are not needed, and no usearch call of theirs was under way
(each holds the GIL, which the forking thread had). Where fork() is missing (Windows) or fails
(no memory for the copy), ``call`` runs in this process.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Callable

MESSAGE_BYTES = 4096


def in_child(call: Callable[[], None]) -> None:
    """``call()`` in a forked child, waited for; OSError with the child's error when it
    failed."""
    if not hasattr(os, "fork"):
        call()
        return
    reading, writing = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns at every fork() of a threaded process, for a child that goes
            # on to run arbitrary code; this one runs one call and exits.
            warnings.simplefilter("ignore", DeprecationWarning)
            child = os.fork()
    except OSError:
        os.close(reading)
        os.close(writing)
        call()
        return
    if child == 0:  # pragma: no cover - the child's lines run in the forked copy
        os.close(reading)
        for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C reaches the whole group:
            signal.signal(signum, signal.SIG_IGN)  # the parent decides, and waits for this
        status = 0
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
            os.write(writing, f"{type(exc).__name__}: {exc}".encode()[:MESSAGE_BYTES])
            status = 1
        os._exit(status)  # no atexit handlers, no buffers of the parent's flushed twice
    os.close(writing)
    with os.fdopen(reading, "rb") as messages:
        message = messages.read().decode(errors="replace")
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(message or f"the writing process ended with status {status}")
