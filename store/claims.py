"""Claims: how nodes split their work. Before a node reads a file, embeds new content or
answers an inbox query, it claims the work by key for a lease; a claim held by another node is
skipped (and retried later), one that ran out (its node died) is taken over. A live node
renews its claims with its heartbeat."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select, update

from lookalike.base.chunks import chunks
from lookalike.store.clock import database_clock
from lookalike.store.store import Store, dialect_insert
from lookalike.store.tables import Claim


class Claims:
    """The claims of one node (``node``, its id) with leases of ``lease`` seconds."""

    def __init__(self, store: Store, node: str, lease: float):
        self.store, self.node, self.lease = store, node, lease
        self._insert = dialect_insert(store.engine)

    def take(self, keys: Iterable[str]) -> set[str]:
        """Claim each of ``keys`` for a lease; returns those this node now holds (those it
        held already among them). In key order, so two nodes claiming at once never
        deadlock (one waits for the other's short transaction)."""
        keys, held = sorted(set(keys)), set()
        if not keys:
            return held
        with self.store.session() as session:
            now = database_clock(session)
            for chunk in chunks(keys):
                statement = self._insert(Claim).values([
                    {"key": key, "node": self.node, "expires": now + self.lease}
                    for key in chunk])
                statement = statement.on_conflict_do_update(
                    index_elements=[Claim.key],
                    set_={"node": statement.excluded.node, "expires": statement.excluded.expires},
                    where=(Claim.expires < now) | (Claim.node == self.node),
                ).returning(Claim.key)
                held.update(session.scalars(statement))
        return held

    def lost(self, session, keys: list[str]) -> set[str]:
        """Of ``keys``, those no longer this node's (another took them over), checked in the
        caller's write transaction: the rest stay locked until it ends, so none changes hands
        before the write commits."""
        held: set[str] = set()
        for chunk in chunks(keys):
            held.update(session.scalars(select(Claim.key).where(
                Claim.node == self.node, Claim.key.in_(chunk)).with_for_update()))
        return set(keys) - held

    def release(self, keys: Iterable[str]) -> None:
        """Give up claims once their work is stored (a claim since taken over stays)."""
        with self.store.session() as session:
            for chunk in chunks(keys):
                session.execute(delete(Claim).where(Claim.node == self.node,
                                                    Claim.key.in_(chunk)))

    def release_all(self) -> None:
        """Give up every claim: the work in flight was dropped (the database went away)."""
        with self.store.session() as session:
            session.execute(delete(Claim).where(Claim.node == self.node))

    def renew(self, session, now: float) -> None:
        """Extend every claim of this node by a lease from ``now`` (in the heartbeat's
        transaction)."""
        session.execute(update(Claim).where(Claim.node == self.node)
                        .values(expires=now + self.lease))
