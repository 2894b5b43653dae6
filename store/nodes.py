"""The processes that share one store (nodes): who they are, whether they are alive.

Every `lookalike run` and `index` is a node: a row with a random id, its host, pid, pipeline
and heartbeat. Nodes of one store must share one pipeline (and its reading limits), checked
and joined in one transaction. A node is live while its heartbeat is recent; its pid says it
died only within its own pid space (a container on the same host name has another): read by
store/status.py, which `lookalike status` uses without SQLAlchemy. The heartbeat renews the
node's claims (store/claims.py). Times are the database's clock (store/clock.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import delete, update
from sqlalchemy.exc import SQLAlchemyError

from lookalike.base.errors import LookalikeError
from lookalike.store.claims import Claims
from lookalike.store.clock import database_clock
from lookalike.store.status import PID_SPACE, StoreReader
from lookalike.store.store import Store, driver_connection, lock_for_transaction
from lookalike.store.tables import Claim, Node

log = logging.getLogger(__name__)

# A node renews its claims this many times a lease (not heard from for LEASES_TO_GONE leases,
# it is gone). Its row is forgotten after a day.
BEATS_PER_LEASE = 3
FORGOTTEN_AFTER = 86_400.0
# Nodes joining a PostgreSQL store at once check the others one at a time.
JOIN_LOCK = 0x6E6F6465  # "node"


class ThisNode:
    """This process among the store's nodes: its row, its claims, its heartbeat thread."""

    def __init__(self, store: Store, command: str, model: str, lease_seconds: float,
                 limits: str = "", onnx_providers: str | None = None):
        """Join: refused while a live node embeds with another pipeline or reads with other
        limits (it would re-embed every image the others embed, and they its), checked and
        joined in one transaction, under a lock on PostgreSQL (two nodes started at once
        with different pipelines: the second is refused)."""
        self.store, self.lease = store, lease_seconds
        self.id = uuid.uuid4().hex
        with store.session() as session:
            lock_for_transaction(session.connection(), JOIN_LOCK)
            now = database_clock(session)
            session.execute(delete(Node).where(Node.heartbeat < now - FORGOTTEN_AFTER))
            session.execute(delete(Claim).where(Claim.expires < now - FORGOTTEN_AFTER))
            for other in StoreReader(driver_connection(session)).nodes():
                if other.live and (other.model, other.limits or "") != (model, limits):
                    raise LookalikeError(
                        f"lookalike {other.command} on {other.host} (pid {other.pid}) embeds "
                        f"with another pipeline ({_pipeline(other.model, other.limits)}, this "
                        f"config: {_pipeline(model, limits)}): every node of one database "
                        "must use the same pipeline")
            session.add(Node(id=self.id, host=socket.gethostname(), pid=os.getpid(),
                             pid_space=PID_SPACE, command=command, model=model, limits=limits,
                             onnx_providers=onnx_providers,
                             since=now, heartbeat=now, lease=lease_seconds, queue=0,
                             embedded=0))
        self.claims = Claims(store, self.id, lease_seconds)
        self._stopping = threading.Event()
        self._beating = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._beating.start()

    def report(self, queue: int, embedded: int, last_problem: str | None) -> None:
        """What `lookalike status` shows of this node."""
        with self.store.session() as session:
            session.execute(update(Node).where(Node.id == self.id).values(
                queue=queue, embedded=embedded, last_problem=last_problem))

    def answers_http(self, url: str | None) -> None:
        """Where this node answers HTTP (None: no longer)."""
        with self.store.session() as session:
            session.execute(update(Node).where(Node.id == self.id).values(http=url))

    def renew(self) -> None:
        """The heartbeat: this node is alive and still working on what it claimed."""
        with self.store.session() as session:
            now = database_clock(session)
            self.claims.renew(session, now)
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
def joined(store: Store, command: str, model: str, lease_seconds: float = 60.0,
           limits: str = "", onnx_providers: str | None = None) -> Iterator[ThisNode]:
    """This process as a node of ``store`` for the block (see ``ThisNode``);
    ``onnx_providers``: what runs its ONNX models, as `status` shows it (None: none)."""
    node = ThisNode(store, command, model, lease_seconds, limits, onnx_providers)
    try:
        yield node
    finally:
        node.leave()


def _pipeline(model: str, limits: str | None) -> str:
    return f"{model}, {limits}" if limits else model


def forget_nodes(store: Store) -> None:
    """Forget every node and claim: for a store one process uses at a time (a SQLite file
    under its lock), they were left by a process killed before it signed off."""
    with store.session() as session:
        session.execute(delete(Claim))
        session.execute(delete(Node))
