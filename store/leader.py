"""The snapshot's writer: of several nodes, one writes feature_vectors.pkl at a time."""

from __future__ import annotations

from lookalike.store.claims import Claims

# The claim held by the node that writes the snapshot.
SNAPSHOT_CLAIM = "snapshot"


class SnapshotLeader:
    """Whether this node is the one that writes the snapshot: on a database server, the
    holder of the snapshot claim, renewed with its heartbeat, so a node that dies or is
    paused past its lease loses the lead to another (a lock tied to its connection outlived
    a paused node); on SQLite, which one service uses, always."""

    def __init__(self, claims: Claims):
        self.claims = claims
        self._shared = claims.store.engine.dialect.name != "sqlite"

    def holds(self) -> bool:
        """True when this node is (or just became) the writer."""
        return not self._shared or SNAPSHOT_CLAIM in self.claims.take([SNAPSHOT_CLAIM])

    def release(self) -> None:
        if self._shared:
            self.claims.release([SNAPSHOT_CLAIM])
