"""One service per SQLite database: an exclusive lock on a file beside it, holding pid and
start time. A database server is shared by nodes instead (store/nodes.py)."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from lookalike.base.errors import LookalikeError
from lookalike.store.urls import sqlite_file


class AlreadyRunning(LookalikeError):
    """Another service holds the lock of this database."""


def lock_path(database_url: str) -> Path | None:
    """``<db file>.lock`` for SQLite files; None for a database server, which several
    services (nodes) may share."""
    file = sqlite_file(database_url)
    return Path(file + ".lock") if file else None


class ServiceLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, command: str) -> None:
        """Take the lock for ``command`` (run or index), or raise AlreadyRunning."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LookalikeError(f"cannot create lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path) or {}
            raise AlreadyRunning(
                f"another lookalike process (lookalike {holder.get('command', 'run')}, pid "
                f"{holder.get('pid', '?')}) is already running on this database (lock {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "command": command, "started_at": started}
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def read_holder(path: Path) -> dict | None:
    """The pid and start time of the running service, or None when none holds the lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.read(fd, 4096) or b"{}")
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
