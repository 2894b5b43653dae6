"""The query functions: image bytes, a catalogue item's stored vector, or words -> a neighbours
answer. The inbox, the CLI, the UI and HTTP all answer through them, in one schema."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.base.errors import ImageError, LookalikeError, TransientError, UnreadableFile
from lookalike.pipeline.pipeline import NO_TEXT_TOWER, Pipeline, Prepared
from lookalike.pipeline.steps import VectorIndex
from lookalike.search.index import Neighbour, NeighbourIndex
from lookalike.store.store import Store

if TYPE_CHECKING:
    from lookalike.search.follow import FollowedIndex

EMPTY_INDEX = "the index holds no images embedded by this model yet"
# A text query is a few words; a file this long is not one.
MAX_TEXT_BYTES = 4096


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
    # Scored together: the exact index reads its vectors once for all of them.
    found = dict(zip([position for position, _ in prepared],
                     index.search_many(vectors, k) if prepared else [], strict=True))
    return [answer(name, pipeline.model_id, k, index, found.get(position, []),
                   errors.get(position))
            for position, (name, _) in enumerate(queries)]


def read_text_query(path: Path) -> str:
    """The words of a text query file (UTF-8, at most ``MAX_TEXT_BYTES``); LookalikeError
    with one line saying why it is not one, UnreadableFile when it cannot be read at all."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise LookalikeError(f"a text query is at most {MAX_TEXT_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LookalikeError("a text query must be UTF-8 text") from None


def answer_texts(
    pipeline: Pipeline,
    index: NeighbourIndex | FollowedIndex,
    queries: Sequence[tuple[str, str | LookalikeError]],
    k: int,
) -> list[dict[str, Any]]:
    """One answer per (name, text): the k catalogue images nearest the text's embedding (by
    the embedder's text tower), or an "error" field: the text is blank or was the error met
    reading it, or the embedder has no text tower. Nothing is stored."""
    errors: dict[int, str] = {}
    words = []
    for position, (_, text) in enumerate(queries):
        if isinstance(text, LookalikeError):
            errors[position] = str(text)
        elif not pipeline.reads_text:
            errors[position] = NO_TEXT_TOWER
        elif not text.strip():
            errors[position] = "the text is empty"
        else:
            words.append((position, " ".join(text.split())))
    found = {}
    if words:
        try:
            vectors = pipeline.embed_text([text for _, text in words])
        except TransientError:
            raise
        except LookalikeError as exc:  # the text tower cannot run: each query says why
            errors.update((position, str(exc)) for position, _ in words)
        else:
            found = dict(zip([position for position, _ in words],
                             index.search_many(vectors, k), strict=True))
    return [answer(name, pipeline.model_id, k, index, found.get(position, []),
                   errors.get(position))
            for position, (name, _) in enumerate(queries)]


def answer_similar(
    store: Store, model: str, index: NeighbourIndex | FollowedIndex, paths: Sequence[str],
    k: int,
) -> list[dict[str, Any]]:
    """One answer per catalogue path: the k images most like it, from its vector as the index
    holds it (nothing is decoded, no model runs), the item itself left out; an "error" field,
    the store's reason, for a path the index does not hold."""
    vectors = {path: index.vector(path) for path in paths}
    held = [path for path, vector in vectors.items() if vector is not None]
    missing = [path for path, vector in vectors.items() if vector is None]
    reasons = store.missing_reasons(missing, model) if missing else {}
    found = dict(zip(held, index.search_many(np.stack([vectors[path] for path in held]), k + 1)
                     if held else [], strict=True))
    return [answer(path, model, k, index, [n for n in found[path] if n.path != path][:k], None)
            if path in found else answer(path, model, k, index, [], reasons[path])
            for path in paths]


def answer(name: str, model: str, k: int, index: NeighbourIndex | FollowedIndex,
           found: Sequence[Neighbour], error: str | None) -> dict[str, Any]:
    """The answer schema (docs/formats.md): the query's name, the model, k, the index's size,
    when, the neighbours ranked; "error" where there is no answer."""
    result: dict[str, Any] = {
        "query": name,
        "model": model,
        "k": k,
        "index_size": index.size,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "neighbours": [{"rank": rank, "path": n.path, "similarity": n.similarity}
                       for rank, n in enumerate(found, start=1)],
    }
    if error is None and index.size == 0:
        error = EMPTY_INDEX
    if error is not None:
        result["error"] = error
    return result
