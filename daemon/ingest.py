"""The one ingest function: bring the store in line with some files under images_dir.

It serves the watcher, the start-up reconciliation and ``lookalike index``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

from lookalike.pipeline.errors import ImageError
from lookalike.pipeline.pipeline import Pipeline
from lookalike.store.models import FAILED
from lookalike.store.store import FileState, ImageFacts, Store

from .files import regular_file_inside

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    embedded: int = 0
    reused: int = 0
    unchanged: int = 0
    failed: int = 0
    removed: int = 0
    busy: int = 0  # changed while being read; its next change event brings it back

    @property
    def changed(self) -> bool:
        return bool(self.embedded or self.reused or self.failed or self.removed)

    def __str__(self) -> str:
        return (
            f"{self.embedded} embedded, {self.reused} reused, {self.unchanged} unchanged, "
            f"{self.failed} failed, {self.removed} removed"
        )


def ingest(
    store: Store,
    pipeline: Pipeline,
    images_dir: Path,
    paths: Iterable[str],
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Embed new or changed files, forget vanished ones; equal bytes are embedded once."""
    report = IngestReport()
    paths = iter(paths)
    while batch := list(islice(paths, batch_size)):
        _ingest_batch(store, pipeline, images_dir, batch, report)
        if on_progress:
            on_progress(len(batch))
    return report


def _ingest_batch(store, pipeline, images_dir, batch, report) -> None:
    model = pipeline.model_id
    gone, done, to_embed = [], [], []
    first_by_hash: dict[str, ImageFacts] = {}
    copies: list[ImageFacts] = []
    for path in batch:
        stat = regular_file_inside(images_dir, path)
        if stat is None:
            gone.append(path)
            continue
        if is_current(store.file_state(path), stat, model):
            report.unchanged += 1
            continue
        data = _read_settled(images_dir / path, stat)
        if data is None:
            report.busy += 1
            continue
        facts = ImageFacts(path, hashlib.sha256(data).hexdigest(), stat.st_size, stat.st_mtime_ns)
        same = store.indexed_vector(facts.sha256, model)
        if same is not None:
            done.append(replace(same, path=path, size=facts.size, mtime_ns=facts.mtime_ns))
            log.info("indexed %s (same content as %s)", path, same.path)
            report.reused += 1
        elif facts.sha256 in first_by_hash:
            copies.append(facts)
            report.reused += 1
        else:
            try:
                image, (width, height) = pipeline.prepare(data)
            except ImageError as exc:
                log.warning("failed %s: %s", path, exc)
                done.append(replace(facts, error=str(exc)))
                report.failed += 1
                continue
            first_by_hash[facts.sha256] = facts
            to_embed.append((replace(facts, width=width, height=height, model=model), image))
    vectors = pipeline.embed([image for _, image in to_embed])
    embedded = {}
    for (facts, _), vector in zip(to_embed, vectors, strict=True):
        embedded[facts.sha256] = replace(facts, vector=vector.tobytes())
        log.info("indexed %s", facts.path)
    report.embedded += len(embedded)
    for facts in copies:
        log.info("indexed %s (same content as another new file)", facts.path)
        done.append(replace(embedded[facts.sha256], path=facts.path, size=facts.size,
                            mtime_ns=facts.mtime_ns))
    removed = store.apply(done + list(embedded.values()), gone)
    report.removed += removed
    if removed:
        log.info("removed %d vanished file(s)", removed)


def is_current(known: FileState | None, stat: os.stat_result, model: str) -> bool:
    """True when the stored row still describes the file: same stat, and same model unless
    the file failed (a failed file is retried only when it changes)."""
    return (
        known is not None
        and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        and (known.status == FAILED or known.model == model)
    )


def _read_settled(path: Path, stat) -> bytes | None:
    """The file's bytes, or None when it changed while being read."""
    try:
        data = path.read_bytes()
        after = path.stat()
    except OSError:
        return None
    if (after.st_size, after.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
        return None
    return data
