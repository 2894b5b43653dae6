"""Retrieval quality of the configured pipeline on a categorised folder (leave-one-out)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.pipeline.errors import ImageError, LookalikeError
from lookalike.pipeline.pipeline import Pipeline

from .files import scan

log = logging.getLogger(__name__)

CHUNK_ROWS = 1024  # similarity rows computed at once: bounds memory at N * 4 KiB


@dataclass
class Evaluation:
    k: int
    images: int
    overall: float
    per_category: dict[str, float]
    sizes: dict[str, int]
    failed: list[tuple[str, str]]


def categorised_images(folder: Path) -> list[tuple[str, str]]:
    """(relative path, category) for each image in a sub-folder of ``folder``; the category is
    the first sub-folder's name."""
    return [(path, path.split("/", 1)[0]) for path in scan(folder) if "/" in path]


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
    kept, vectors, failed = [], [], []
    for start in range(0, len(items), batch_size):
        batch, images = [], []
        for path, category in items[start:start + batch_size]:
            try:
                images.append(pipeline.prepare((folder / path).read_bytes())[0])
                batch.append((path, category))
            except (ImageError, OSError) as exc:
                failed.append((path, str(exc)))
        vectors.append(pipeline.embed(images))
        kept += batch
        on_progress(len(items[start:start + batch_size]))
    labels = np.array([category for _, category in kept])
    hits = same_category_hits(np.concatenate(vectors), labels, k)
    categories = sorted(set(labels))
    return Evaluation(
        k=k,
        images=len(kept),
        overall=float(hits.mean()),
        per_category={c: float(hits[labels == c].mean()) for c in categories},
        sizes={c: int((labels == c).sum()) for c in categories},
        failed=failed,
    )


def same_category_hits(vectors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """For each vector, the fraction of its k nearest others (cosine) with its own label."""
    count = len(vectors)
    k = min(k, count - 1)
    if k < 1:
        raise LookalikeError("precision needs at least two images")
    hits = np.empty(count, dtype=np.float64)
    for start in range(0, count, CHUNK_ROWS):
        similarity = vectors[start:start + CHUNK_ROWS] @ vectors.T
        rows = np.arange(similarity.shape[0])
        similarity[rows, start + rows] = -np.inf  # leave the query itself out
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        hits[start:start + len(rows)] = (labels[nearest] == labels[start + rows, None]).mean(1)
    return hits
