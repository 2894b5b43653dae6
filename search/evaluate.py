"""Retrieval quality of the configured pipeline on a categorised folder (leave-one-out)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.base.errors import ImageError, LookalikeError
from lookalike.base.files import file_path, scan
from lookalike.pipeline.pipeline import Pipeline

CHUNK_ROWS = 1024  # similarity rows computed at once: bounds memory at N * 4 KiB


@dataclass
class Evaluation:
    k: int
    images: int
    overall: float
    per_category: dict[str, float]
    sizes: dict[str, int]
    failed: list[tuple[str, str]]
    removals: dict[str, int]  # images by the way their background was removed


def categorised_images(folder: Path) -> list[tuple[str, str]]:
    """(relative path, category) for each image in a sub-folder of ``folder``; the category is
    the first sub-folder's name."""
    return [(path, path.split("/", 1)[0]) for path in scan(folder).files if "/" in path]


def evaluate_folder(
    pipeline: Pipeline,
    folder: Path,
    k: int,
    batch_size: int,
    on_progress: Callable[[int], None] = lambda n: None,
) -> Evaluation:
    """Embed every image of ``folder`` and query each against all the others."""
    items = categorised_images(folder)
    if not items:
        raise LookalikeError(f"{folder} has no images in category sub-folders")
    embedded = embed_files(pipeline, folder, items, batch_size, on_progress)
    labels = np.array([category for _, category in embedded.kept])
    hits = same_category_hits(embedded.vectors, labels, k)
    categories = sorted(set(labels))
    return Evaluation(
        k=k,
        images=len(embedded.kept),
        overall=float(hits.mean()),
        per_category={c: float(hits[labels == c].mean()) for c in categories},
        sizes={c: int((labels == c).sum()) for c in categories},
        failed=embedded.failed,
        removals=dict(embedded.removals.most_common()),
    )


@dataclass
class Embedded:
    """The (path, label) items embedded, their vectors, the (path, error) of those that could
    not be read or decoded, and how many took each way of removing the background."""

    kept: list[tuple[str, str]]
    vectors: np.ndarray
    failed: list[tuple[str, str]]
    removals: Counter


def embed_files(
    pipeline: Pipeline,
    folder: Path,
    items: list[tuple[str, str]],
    batch_size: int,
    on_progress: Callable[[int], None] = lambda n: None,
) -> Embedded:
    """Embed (path, label) items in batches."""
    kept, vectors, failed, removals = [], [], [], Counter()
    for start in range(0, len(items), batch_size):
        batch, images = [], []
        for path, label in items[start:start + batch_size]:
            try:
                prepared = pipeline.prepare(pipeline.read_file(file_path(folder, path)))
                images.append(prepared.square)
                removals[prepared.removal] += 1
                batch.append((path, label))
            except ImageError as exc:
                failed.append((path, str(exc)))
        vectors.append(pipeline.embed(images))
        kept += batch
        on_progress(len(items[start:start + batch_size]))
    return Embedded(kept, np.concatenate(vectors), failed, removals)


def same_category_hits(
    queries: np.ndarray,
    query_labels: np.ndarray,
    k: int,
    catalogue: np.ndarray | None = None,
    catalogue_labels: np.ndarray | None = None,
) -> np.ndarray:
    """For each query, the fraction of its k nearest catalogue vectors (cosine) that share its
    label. Without a catalogue the queries are the catalogue, each leaving itself out."""
    leave_one_out = catalogue is None
    if leave_one_out:
        catalogue, catalogue_labels = queries, query_labels
    k = min(k, len(catalogue) - leave_one_out)
    if k < 1:
        raise LookalikeError("precision needs at least two images")
    hits = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), CHUNK_ROWS):
        similarity = queries[start:start + CHUNK_ROWS] @ catalogue.T
        rows = np.arange(similarity.shape[0])
        if leave_one_out:
            similarity[rows, start + rows] = -np.inf
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        own = query_labels[start + rows, None]
        hits[start:start + len(rows)] = (catalogue_labels[nearest] == own).mean(1)
    return hits
