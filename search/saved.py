"""The saved copy of an index that is slow to build (the "hnsw" graph), beside the snapshot.

The service saves its index now and then and when it stops; whoever loads the index (the
service at start, the UI, `lookalike query`) restores the copy and applies what the store
changed since, instead of building the graph again (minutes at a million images). Two files:
the index's own (``feature_vectors.hnsw``) and, written after it, a description
(``feature_vectors.hnsw.json``: the catalogue, model, store generation, the paths by key, the
index file's size and CRC-32). A copy is used only when it is whole, of this catalogue and
model, made with this index's settings, and not older than the store's log of removals;
anything else is rebuilt from the store, never trusted.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path

from lookalike.base.atomic import atomic_path, write_atomically
from lookalike.pipeline.steps import SavedIndex, VectorIndex
from lookalike.search.index import NeighbourIndex
from lookalike.store.store import ROOT_KEY, Store

log = logging.getLogger(__name__)

FORMAT = 1
READ_BYTES = 1 << 24


def saved_paths(snapshot: Path, index_id: str) -> tuple[Path, Path]:
    """The index file and its description, beside ``snapshot``."""
    data = snapshot.with_suffix(f".{index_id}")
    return data, data.with_name(data.name + ".json")


def save_index(neighbours: NeighbourIndex, generation: int, catalogue: str, snapshot: Path
               ) -> bool:
    """Save ``neighbours`` as of store ``generation``: the index file, then its description;
    False for an index that is not saved (quick to build, or empty)."""
    vector_index = neighbours.vector_index
    if not isinstance(vector_index, SavedIndex) or neighbours.size == 0:
        return False
    data, description = saved_paths(snapshot, vector_index.id)
    with atomic_path(data) as temp:
        vector_index.save(temp)
        size, crc = temp.stat().st_size, _crc32(temp)
    write_atomically(description, json.dumps({
        "format": FORMAT, "catalogue": catalogue, "model": neighbours.model,
        "generation": generation, "dimension": neighbours.dimension, "bytes": size,
        "crc32": crc, "paths": neighbours.paths_by_key()}).encode())
    return True


def restore_index(store: Store, model: str, vector_index: VectorIndex, snapshot: Path
                  ) -> tuple[NeighbourIndex, int] | None:
    """The saved index of ``model`` and the store generation it holds, or None (and why, in
    the log) when there is none to trust."""
    if not isinstance(vector_index, SavedIndex):
        return None
    data, description = saved_paths(snapshot, vector_index.id)
    if not description.exists():
        return None
    problem, saved = _checked(store, model, vector_index, data, description)
    if problem:
        log.warning("the saved index %s is not used, the index is built again: %s", data,
                    problem)
        return None
    neighbours = NeighbourIndex.restored(model, vector_index, saved["paths"], saved["dimension"])
    return neighbours, saved["generation"]


def _checked(store: Store, model: str, vector_index: SavedIndex, data: Path,
             description: Path) -> tuple[str | None, dict]:
    """Why the saved index cannot be used (None: it is restored into ``vector_index``)."""
    try:
        saved = json.loads(description.read_bytes())
        if saved.get("format") != FORMAT:
            return f"format {saved.get('format')}, not {FORMAT}", saved
        if saved["catalogue"] != store.get_meta(ROOT_KEY):
            return "saved from another catalogue", saved
        if saved["model"] != model:
            return f"saved for model {saved['model']}", saved
        if saved["generation"] > store.generation():
            return "saved from a later state of the store (restored from a backup?)", saved
        if store.removed_since(saved["generation"]) is None:
            return "older than the store's log of removals", saved
        if data.stat().st_size != saved["bytes"] or _crc32(data) != saved["crc32"]:
            return "its file is not the one described (cut short or replaced)", saved
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"cannot be read ({exc})", {}
    return vector_index.restore(data, saved["dimension"]), saved


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as file:
        while chunk := file.read(READ_BYTES):
            crc = zlib.crc32(chunk, crc)
    return crc
