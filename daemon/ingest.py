"""The one ingest function: bring the store in line with some files under images_dir.

It serves the watcher, the start-up reconciliation and ``lookalike index``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice, repeat
from pathlib import Path

from lookalike.pipeline.errors import ImageError, LookalikeError
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
    # Files that changed while being read or embedded: nothing was stored for them, and
    # the caller processes them again once they settle.
    busy: list[str] = field(default_factory=list)

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
    should_stop: Callable[[], bool] = lambda: False,
) -> IngestReport:
    """Embed new or changed files, forget vanished ones; equal bytes are embedded once.

    Stops between files when ``should_stop()`` turns true; what was not stored yet is
    found again by the next reconciliation.
    """
    report = IngestReport()
    paths = iter(paths)
    while not should_stop() and (batch := list(islice(paths, batch_size))):
        _ingest_batch(store, pipeline, images_dir, batch, report, should_stop)
        if on_progress:
            on_progress(len(batch))
    return report


def is_current(known: FileState | None, stat: os.stat_result, model: str) -> bool:
    """True when the stored row still describes the file: same stat, and same model unless
    the file failed (a failed file is retried only when it changes)."""
    return (
        known is not None
        and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        and (known.status == FAILED or known.model == model)
    )


def _signature(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _ingest_batch(store, pipeline, images_dir, batch, report, should_stop) -> None:
    model = pipeline.model_id
    gone, done, to_prepare, to_embed, copies = [], [], [], [], []
    error_of: dict[str, str] = {}  # content hash -> why it could not be prepared
    read_as: dict[str, tuple[int, int, int]] = {}
    first_by_hash: dict[str, ImageFacts] = {}
    known = store.file_states(batch)
    fresh: list[ImageFacts] = []
    data_of: dict[str, bytes] = {}
    for path in batch:
        if should_stop():
            return
        stat = regular_file_inside(images_dir, path)
        if stat is None:
            gone.append(path)
            continue
        if is_current(known.get(path), stat, model):
            report.unchanged += 1
            continue
        data = _read_settled(images_dir / path, stat)
        if data is None:
            report.busy.append(path)
            continue
        read_as[path] = _signature(stat)
        data_of[path] = data
        fresh.append(ImageFacts(path, hashlib.sha256(data).hexdigest(), stat.st_size,
                                stat.st_mtime_ns))
    stored = store.indexed_vectors({facts.sha256 for facts in fresh}, model)
    for facts in fresh:
        same = stored.get(facts.sha256)
        if same is not None:
            done.append(replace(same, path=facts.path, size=facts.size, mtime_ns=facts.mtime_ns))
            log.info("indexed %s (same content as %s)", facts.path, same.path)
            report.reused += 1
        elif facts.sha256 in first_by_hash:
            copies.append(facts)  # resolved once the first file of that content is done
        else:
            first_by_hash[facts.sha256] = facts
            to_prepare.append((facts, data_of.pop(facts.path)))
    # Decoding and background removal of the batch's images run side by side on every core.
    with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="prepare") as pool:
        prepared = list(pool.map(_prepare, repeat(pipeline), (data for _, data in to_prepare)))
    for (facts, _), (outcome, error) in zip(to_prepare, prepared, strict=True):
        if error is None:
            image, (width, height) = outcome
            to_embed.append((replace(facts, width=width, height=height, model=model), image))
            continue
        log.warning("failed %s: %s", facts.path, error)
        done.append(replace(facts, error=error))
        report.failed += 1
        error_of[facts.sha256] = error
    vectors = pipeline.embed([image for _, image in to_embed])
    embedded = {}
    for (facts, _), vector in zip(to_embed, vectors, strict=True):
        embedded[facts.sha256] = replace(facts, vector=vector.tobytes())
        log.info("indexed %s", facts.path)
    report.embedded += len(embedded)
    for facts in copies:
        if facts.sha256 in error_of:  # a copy of an image that failed fails alike
            log.warning("failed %s: %s", facts.path, error_of[facts.sha256])
            done.append(replace(facts, error=error_of[facts.sha256]))
            report.failed += 1
            continue
        report.reused += 1
        log.info("indexed %s (same content as %s)", facts.path, embedded[facts.sha256].path)
        done.append(replace(embedded[facts.sha256], path=facts.path, size=facts.size,
                            mtime_ns=facts.mtime_ns))
    # A file replaced while it was embedded keeps no vector of its old content.
    changed = {path for path, signature in read_as.items() if _changed_since(images_dir, path,
                                                                            signature)}
    report.busy += sorted(changed)
    keep = [facts for facts in done + list(embedded.values()) if facts.path not in changed]
    report.removed += store.apply(keep, gone)
    for path in gone:
        log.info("removed %s", path)


def _prepare(pipeline: Pipeline, data: bytes):
    """(prepare's result, None), or (None, error) for an image the pipeline cannot read."""
    try:
        return pipeline.prepare(data), None
    except ImageError as exc:
        return None, str(exc)
    except LookalikeError:
        raise  # a model or config problem: no file's fault, stop
    except Exception as exc:  # a plugin tripping over one odd image
        return None, f"{type(exc).__name__}: {exc}"


def _changed_since(images_dir: Path, path: str, signature: tuple[int, int, int]) -> bool:
    stat = regular_file_inside(images_dir, path)
    return stat is None or _signature(stat) != signature


def _read_settled(path: Path, stat: os.stat_result) -> bytes | None:
    """The file's bytes, or None when it changed while being read."""
    try:
        data = path.read_bytes()
        after = path.stat()
    except OSError:
        return None
    return data if _signature(after) == _signature(stat) else None
