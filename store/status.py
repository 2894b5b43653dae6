"""What `lookalike status`, the UI and HTTP report of a catalogue: counts, how backgrounds were
removed, the last refresh, removals held back, and every node with whether it is alive.

The figures are read with plain SQL through the database driver's own connection (sqlite3's or
psycopg's), never SQLAlchemy: `lookalike status` reads a SQLite file of this schema with
Python's sqlite3 alone and so starts at once (importing SQLAlchemy takes a third of a second);
the service and the UI read through their store's engine (``Store.tallies``, ``meta``,
``nodes``), which keeps the tallies until the next write.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from lookalike.store.clock import CLOCK
from lookalike.store.schema import FAILED, HELD_BACK, INDEXED, is_current
from lookalike.store.urls import masked

# A node not heard from for this many of its leases is gone.
LEASES_TO_GONE = 3
# How long `status` waits for a SQLite file another process is writing (as the store does).
BUSY_SECONDS = 30.0


def pid_space() -> str:
    """Where a pid means something: this boot of this machine (Linux's boot id, shared by its
    containers) and this pid namespace (each container's own); elsewhere the host name."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


PID_SPACE = pid_space()


@dataclass(frozen=True)
class NodeStatus:
    id: str
    host: str
    pid: int
    command: str
    model: str
    since: float
    heartbeat: float
    queue: int
    embedded: int
    last_problem: str | None
    live: bool
    limits: str | None
    http: str | None
    onnx_providers: str | None


# The columns of ``nodes`` that a NodeStatus shows.
NODE_COLUMNS = ("id", "host", "pid", "command", "model", "since", "heartbeat", "queue",
                "embedded", "last_problem", "limits", "http", "onnx_providers")


class Tallies(NamedTuple):
    counts: dict[str, dict[str, int]]  # {model or "": {"indexed": n, "failed": m}}
    removals: dict[str, int]  # indexed rows by removal way ("" where not recorded), most first


class Figures(Protocol):
    """Where the report's figures come from: a ``StoreReader``, or the store itself."""

    def tallies(self) -> Tallies: ...
    def meta(self) -> dict[str, str]: ...
    def nodes(self) -> list[NodeStatus]: ...


class StoreReader:
    """The report's figures, read through one DB-API connection (sqlite3's or psycopg's)."""

    def __init__(self, connection: Any):
        self.connection = connection
        self.dialect = "sqlite" if isinstance(connection, sqlite3.Connection) else "postgresql"

    def _rows(self, sql: str) -> list[tuple]:
        with closing(self.connection.cursor()) as cursor:
            cursor.execute(sql)
            return cursor.fetchall()

    def tallies(self) -> Tallies:
        """The rows counted in one scan of the (status, removal, model) index."""
        names = dict(self._rows("SELECT id, name FROM models"))
        counts: dict[str, dict[str, int]] = {}
        removals: dict[str, int] = {}
        for status, removal, key, count in self._rows(
                "SELECT status, removal, model_id, count(*) FROM images "
                "GROUP BY status, removal, model_id"):
            of_model = counts.setdefault(names.get(key) or "", {INDEXED: 0, FAILED: 0})
            of_model[status] = of_model.get(status, 0) + count
            if status == INDEXED:
                removals[removal or ""] = removals.get(removal or "", 0) + count
        return Tallies(counts, dict(sorted(removals.items(), key=lambda item: -item[1])))

    def meta(self) -> dict[str, str]:
        """Every key of the store's meta table with its value."""
        return dict(self._rows("SELECT key, value FROM meta"))

    def nodes(self) -> list[NodeStatus]:
        """Every node the store knows, oldest first: ``live`` when heard from within a few of
        its leases (by the database's clock) and, for a node of this pid space, while its
        process runs (one killed before it signed off is gone at once)."""
        statuses = []
        for *fields, lease, space, now in self._rows(
                f"SELECT {', '.join(NODE_COLUMNS)}, lease, pid_space, {CLOCK[self.dialect]} "
                "FROM nodes ORDER BY since"):
            node = dict(zip(NODE_COLUMNS, fields, strict=True))
            live = (now - node["heartbeat"] <= LEASES_TO_GONE * lease
                    and not _died_here(space, node["pid"]))
            statuses.append(NodeStatus(**node, live=live))
        return statuses

    def current(self) -> bool:
        """True when the store's schema is this lookalike's (as ``Store`` checks it)."""
        version = self._rows("SELECT value FROM meta WHERE key = 'schema_version'")
        stamped = self._rows("SELECT version_num FROM alembic_version")
        return len(version) == len(stamped) == 1 and is_current(version[0][0], stamped[0][0])


def _died_here(space: str | None, pid: int) -> bool:
    """True for a node of this pid space whose process is no longer running."""
    if space != PID_SPACE:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # running, as another user
        return False
    return False


@contextmanager
def sqlite_reader(file: str) -> Iterator[StoreReader | None]:
    """A reader of the SQLite file ``file`` when it is a store of this schema; None when it
    is not (older, newer, not lookalike's, or not to be opened: ``Store`` upgrades it or says
    why in one line)."""
    try:
        connection = sqlite3.connect(f"{Path(file).resolve().as_uri()}?mode=rw", uri=True,
                                     timeout=BUSY_SECONDS)
    except sqlite3.Error:
        yield None
        return
    with closing(connection):
        reader = StoreReader(connection)
        try:
            current = reader.current()
        except sqlite3.DatabaseError:  # no such table, or not a database
            current = False
        yield reader if current else None


def catalogue_status(database_url: str, figures: Figures | None) -> dict[str, Any]:
    """The report; without figures (no database made yet) everything is empty."""
    counts, removals = figures.tallies() if figures else Tallies({}, {})
    meta = figures.meta() if figures else {}
    return {
        "database": masked(database_url),
        "indexed": sum(c[INDEXED] for c in counts.values()),
        "failed": sum(c[FAILED] for c in counts.values()),
        "models": {model: c[INDEXED] for model, c in counts.items() if c[INDEXED]},
        "removals": removals,
        "index_size": int(meta.get("index_size") or 0),
        "last_refresh": meta.get("last_refresh"),
        "removals_held_back": meta.get(HELD_BACK) or None,
        "nodes": [{**asdict(node), "since": _iso(node.since), "heartbeat": _iso(node.heartbeat)}
                  for node in (figures.nodes() if figures else [])],
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
