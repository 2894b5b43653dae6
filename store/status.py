"""What `lookalike status` and the UI report of a catalogue: counts, how backgrounds were
removed, the last refresh, removals held back, and every node."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from lookalike.store.nodes import nodes
from lookalike.store.store import HELD_BACK, Store
from lookalike.store.urls import masked


def catalogue_status(database_url: str, store: Store | None) -> dict[str, Any]:
    """The report; without a store (no database made yet) everything is empty."""
    counts = store.counts() if store else {}
    meta = store.get_meta if store else lambda key: None
    return {
        "database": masked(database_url),
        "indexed": sum(c["indexed"] for c in counts.values()),
        "failed": sum(c["failed"] for c in counts.values()),
        "models": {model: c["indexed"] for model, c in counts.items() if c["indexed"]},
        "removals": store.removal_counts() if store else {},
        "index_size": int(meta("index_size") or 0),
        "last_refresh": meta("last_refresh"),
        "removals_held_back": meta(HELD_BACK) or None,
        "nodes": [{**asdict(node), "since": _iso(node.since), "heartbeat": _iso(node.heartbeat)}
                  for node in (nodes(store) if store else [])],
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
