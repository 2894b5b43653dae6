"""The one query function: image bytes -> neighbours answer. Serves the inbox, CLI and any UI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lookalike.base.errors import ImageError
from lookalike.pipeline.pipeline import Pipeline, Prepared
from lookalike.pipeline.steps import VectorIndex
from lookalike.search.index import NeighbourIndex
from lookalike.store.store import Store

if TYPE_CHECKING:
    from lookalike.search.follow import FollowedIndex

EMPTY_INDEX = "the index holds no images embedded by this model yet"


def load_index(store: Store, model: str, vector_index: VectorIndex) -> NeighbourIndex:
    """``model``'s vectors in the store, in ``vector_index`` (an empty index plugin)."""
    index = NeighbourIndex(model, vector_index)
    index.load(*store.indexed_vectors(model))
    return index


def answer_queries(
    pipeline: Pipeline,
    index: NeighbourIndex | FollowedIndex,
    queries: Sequence[tuple[str, bytes | ImageError]],
    k: int,
    seen: list[Prepared | None] | None = None,
) -> list[dict[str, Any]]:
    """One answer per (name, bytes): the k nearest catalogue images, or an "error" field
    (also where the bytes are the ImageError met reading them).

    ``seen``, when given, receives per query the image as prepared for the embedder (None
    where it could not be read), so a viewer can tell a bad cut-out from a bad match."""
    prepared, errors = [], {}
    for position, (_, data) in enumerate(queries):
        try:
            if isinstance(data, ImageError):
                raise data
            prepared.append((position, pipeline.prepare(data)))
        except ImageError as exc:
            errors[position] = str(exc)
    if seen is not None:
        squares = dict(prepared)
        seen.extend(squares.get(position) for position in range(len(queries)))
    vectors = pipeline.embed([image.square for _, image in prepared])
    found = {
        position: index.search(vector, k)
        for (position, _), vector in zip(prepared, vectors, strict=True)
    }
    answers = []
    for position, (name, _) in enumerate(queries):
        answer: dict[str, Any] = {
            "query": name,
            "model": pipeline.model_id,
            "k": k,
            "index_size": index.size,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "neighbours": [
                {"rank": rank, "path": n.path, "similarity": n.similarity}
                for rank, n in enumerate(found.get(position, []), start=1)
            ],
        }
        if position in errors:
            answer["error"] = errors[position]
        elif index.size == 0:
            answer["error"] = EMPTY_INDEX
        answers.append(answer)
    return answers
