"""The processes that share one store (nodes), and the claims that split their work.

Every `lookalike run` and `index` is a node: a row with its host, pid and heartbeat. Before a
node reads a file, embeds new content or answers an inbox query, it claims the work by key
for a lease; a claim held by another node is skipped (and retried later), one that ran out
(its node died) is taken over. A live node renews its claims with its heartbeat. Times are
the database's clock, so the nodes' clocks need not agree.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import delete, literal_column, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .models import Claim, Node
from .store import Store

log = logging.getLogger(__name__)

# A node renews its claims this many times a lease; not heard from for this many leases, it is
# gone. Its row is forgotten after a day.
BEATS_PER_LEASE = 3
LEASES_TO_GONE = 3
FORGOTTEN_AFTER = 86_400.0
# The session-level PostgreSQL advisory lock held by the node that writes the snapshot.
SNAPSHOT_LOCK = 0x736E6170  # "snap"

CLOCK = {
    "postgresql": "extract(epoch from clock_timestamp())::float8",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


def database_clock(session: Session) -> float:
    """Seconds since 1970 by the database server's clock."""
    return session.scalar(select(literal_column(CLOCK[session.get_bind().dialect.name])))


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


class ThisNode:
    """This process among the store's nodes: its row, its claims, its heartbeat thread."""

    def __init__(self, store: Store, command: str, model: str, lease_seconds: float):
        self.store, self.lease = store, lease_seconds
        self.id = uuid.uuid4().hex
        self._insert = {"postgresql": postgresql.insert,
                        "sqlite": sqlite.insert}[store.engine.dialect.name]
        with store.session() as session:
            now = database_clock(session)
            session.execute(delete(Node).where(Node.heartbeat < now - FORGOTTEN_AFTER))
            session.execute(delete(Claim).where(Claim.expires < now - FORGOTTEN_AFTER))
            session.add(Node(id=self.id, host=socket.gethostname(), pid=os.getpid(),
                             command=command, model=model, since=now, heartbeat=now,
                             lease=lease_seconds, queue=0, embedded=0))
        self._stopping = threading.Event()
        self._beating = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._beating.start()

    def claim(self, keys: Iterable[str]) -> set[str]:
        """Claim each of ``keys`` for a lease; returns those this node now holds (those it
        held already among them). In key order, so two nodes claiming at once never
        deadlock (one waits for the other's short transaction)."""
        keys, held = sorted(set(keys)), set()
        if not keys:
            return held
        with self.store.session() as session:
            now = database_clock(session)
            for start in range(0, len(keys), 500):
                statement = self._insert(Claim).values([
                    {"key": key, "node": self.id, "expires": now + self.lease}
                    for key in keys[start:start + 500]])
                statement = statement.on_conflict_do_update(
                    index_elements=[Claim.key],
                    set_={"node": statement.excluded.node, "expires": statement.excluded.expires},
                    where=(Claim.expires < now) | (Claim.node == self.id),
                ).returning(Claim.key)
                held.update(session.scalars(statement))
        return held

    def release(self, keys: Iterable[str]) -> None:
        """Give up claims once their work is stored (a claim since taken over stays)."""
        keys = list(keys)
        with self.store.session() as session:
            for start in range(0, len(keys), 500):
                session.execute(delete(Claim).where(
                    Claim.node == self.id, Claim.key.in_(keys[start:start + 500])))

    def release_all(self) -> None:
        """Give up every claim: the work in flight was dropped (the database went away)."""
        with self.store.session() as session:
            session.execute(delete(Claim).where(Claim.node == self.id))

    def report(self, queue: int, embedded: int, last_problem: str | None) -> None:
        """What `lookalike status` shows of this node."""
        with self.store.session() as session:
            session.execute(update(Node).where(Node.id == self.id).values(
                queue=queue, embedded=embedded, last_problem=last_problem))

    def renew(self) -> None:
        """The heartbeat: this node is alive and still working on what it claimed."""
        with self.store.session() as session:
            now = database_clock(session)
            session.execute(update(Claim).where(Claim.node == self.id)
                            .values(expires=now + self.lease))
            session.execute(update(Node).where(Node.id == self.id).values(heartbeat=now))

    def _beat(self) -> None:
        while not self._stopping.wait(self.lease / BEATS_PER_LEASE):
            try:
                self.renew()
            except SQLAlchemyError as exc:  # the service loop logs the outage
                log.debug("heartbeat failed: %s", exc)

    def leave(self) -> None:
        """Stop the heartbeat; drop this node's row and claims (a node killed leaves them to
        run out)."""
        self._stopping.set()
        self._beating.join()
        try:
            with self.store.session() as session:
                session.execute(delete(Claim).where(Claim.node == self.id))
                session.execute(delete(Node).where(Node.id == self.id))
        except SQLAlchemyError as exc:
            log.warning("could not sign off from the database: %s", exc)


@contextmanager
def joined(store: Store, command: str, model: str,
           lease_seconds: float = 60.0) -> Iterator[ThisNode]:
    """This process as a node of ``store`` for the block."""
    node = ThisNode(store, command, model, lease_seconds)
    try:
        yield node
    finally:
        node.leave()


def nodes(store: Store) -> list[NodeStatus]:
    """Every node the store knows, oldest first; ``live`` when heard from within a few of
    its leases and, for a node of this machine, while its process runs (one killed before it
    signed off is gone at once)."""
    with store.session() as session:
        now = database_clock(session)
        rows = session.scalars(select(Node).order_by(Node.since)).all()
        return [NodeStatus(row.id, row.host, row.pid, row.command, row.model, row.since,
                           row.heartbeat, row.queue, row.embedded, row.last_problem,
                           now - row.heartbeat <= LEASES_TO_GONE * row.lease
                           and not _died_here(row.host, row.pid))
                for row in rows]


def _died_here(host: str, pid: int) -> bool:
    """True for a node of this machine whose process is no longer running."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # running, as another user
        return False
    return False


def forget_nodes(store: Store) -> None:
    """Forget every node and claim: for a store one process uses at a time (a SQLite file
    under its lock), they were left by a process killed before it signed off."""
    with store.session() as session:
        session.execute(delete(Claim))
        session.execute(delete(Node))


class SnapshotLeader:
    """Whether this process is the one that writes the snapshot: on PostgreSQL, the holder of
    an advisory lock on a connection of its own (gone with the process or the connection, so
    another node takes over); on SQLite, which one service uses, always."""

    def __init__(self, store: Store):
        self.store = store
        self._connection: Connection | None = None

    def holds(self) -> bool:
        """True when this process is (or just became) the writer."""
        if self.store.engine.dialect.name != "postgresql":
            return True
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError:  # the connection and its lock are gone
                self.release()
        connection = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            if connection.scalar(text("SELECT pg_try_advisory_lock(:key)"),
                                 {"key": SNAPSHOT_LOCK}):
                self._connection = connection
                return True
        except SQLAlchemyError:
            connection.invalidate()
            raise
        connection.close()
        return False

    def release(self) -> None:
        if self._connection is not None:
            # Closed, not returned to the pool: the lock goes with the server session.
            self._connection.invalidate()
            self._connection.close()
            self._connection = None
