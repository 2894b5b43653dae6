"""The snapshot's writer: of several nodes, one writes feature_vectors.pkl at a time."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from lookalike.store.store import Store

# The session-level PostgreSQL advisory lock held by the node that writes the snapshot.
SNAPSHOT_LOCK = 0x736E6170  # "snap"


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
