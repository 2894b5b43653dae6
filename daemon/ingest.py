"""The one ingest function: bring the store in line with some files under images_dir.

It serves the watcher, the start-up reconciliation and ``lookalike index``. Each batch goes
through named steps: read (and hash), sort out what is already known, prepare, embed, and
store what is still current. Batches overlap: while one is embedded, the next one's images
are decoded and their backgrounds removed on the other threads.

Several nodes may ingest into one store: a batch claims each file before reading it and each
new content before preparing it (``ThisNode.claim``); what another node holds is left to it
and reported as ``elsewhere``, to be tried again later (when that node has stored it, or its
claim ran out).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice

from PIL import Image

from lookalike.base.cores import usable_cores
from lookalike.base.errors import ImageError, TransientError, UnreadableFile
from lookalike.base.files import changed_since, file_path, image_stat, signature
from lookalike.pipeline.pipeline import Pipeline
from lookalike.store.nodes import ThisNode
from lookalike.store.schema import FAILED
from lookalike.store.store import FileState, ImageRow, Store

log = logging.getLogger(__name__)

# Work another node holds is tried again after this long.
CLAIM_RETRY_SECONDS = 2.0


def file_claim(path: str) -> str:
    return "file:" + path


def content_claim(sha256: str) -> str:
    return "content:" + sha256


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
    # Files or contents another node is working on, or that met a passing failure (out of
    # memory): tried again later.
    elsewhere: list[str] = field(default_factory=list)
    files: int = 0  # the paths this report covers (not those left to another node)

    def __str__(self) -> str:
        return (
            f"{self.embedded} embedded, {self.reused} reused, {self.unchanged} unchanged, "
            f"{self.failed} failed, {self.removed} removed"
        )

    def __iadd__(self, other: IngestReport) -> IngestReport:
        for name in ("embedded", "reused", "unchanged", "failed", "removed", "files"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.busy += other.busy
        self.elsewhere += other.elsewhere
        return self


def ingest(
    store: Store,
    pipeline: Pipeline,
    images_dir,
    node: ThisNode,
    paths: Iterable[str],
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> IngestReport:
    """Embed new or changed files, forget vanished ones; equal bytes are embedded once.
    Files other nodes hold are tried again until they are done (by them, or by this node
    once their claims run out).

    Stops between batches when ``should_stop()`` turns true; what was not stored yet is
    found again by the next reconciliation."""
    report = IngestReport()
    with preparing_pool() as pool:
        ingester = Ingester(store, pipeline, images_dir, pool, node)
        pending = paths
        while pending:
            chunks = iter(pending)
            while not should_stop() and (chunk := list(islice(chunks, batch_size))):
                report += _progressed(ingester.feed(chunk), on_progress)
            report += _progressed(ingester.flush(), on_progress)
            pending, report.elsewhere = report.elsewhere, []
            if pending and not should_stop():
                log.info("%d file(s) held by other nodes: trying again", len(pending))
                time.sleep(CLAIM_RETRY_SECONDS)
    return report


def _progressed(report: IngestReport, on_progress: Callable[[int], None] | None):
    if on_progress and report.files:
        on_progress(report.files)
    return report


class Ingester:
    """Ingest in overlapping batches: ``feed`` reads a batch and starts preparing its images
    on the pool, then embeds and stores the batch fed before it, so removing backgrounds and
    embedding run at once. ``flush`` finishes the batch still waiting. A batch never
    finished (the process stops) stored nothing: the next reconciliation finds its files."""

    def __init__(self, store: Store, pipeline: Pipeline, images_dir, pool: ThreadPoolExecutor,
                 node: ThisNode):
        self.store, self.pipeline, self.images_dir, self.pool = store, pipeline, images_dir, pool
        self.node = node
        self._waiting: Batch | None = None

    def feed(self, paths: list[str]) -> IngestReport:
        """Start ``paths``; the report of the batch this finished (empty for the first)."""
        started = Batch(self.store, self.pipeline, self.images_dir, self.pool, self.node).start(
            paths, self._waiting)
        finished = self.flush()
        self._waiting = started
        return finished

    def flush(self) -> IngestReport:
        """Finish the waiting batch; its report (empty when none was waiting)."""
        waiting, self._waiting = self._waiting, None
        return waiting.finish() if waiting is not None else IngestReport()


def is_current(known: FileState | None, stat: os.stat_result, model: str, limits: str) -> bool:
    """True when the stored row still describes the file: same stat, and same model, or for
    a failed file the same reading limits (a file is retried when it changes, or when a
    limit that may have refused it does)."""
    return (
        known is not None
        and (known.size, known.mtime_ns) == signature(stat)[:2]
        and (known.limits == limits if known.status == FAILED else known.model == model)
    )


def preparing_pool() -> ThreadPoolExecutor:
    """Threads that decode and remove backgrounds side by side, one per core."""
    return ThreadPoolExecutor(usable_cores(), thread_name_prefix="prepare")


@dataclass
class _Read:
    """A file read whole: its row so far, the bytes, and the stat they were read under."""

    row: ImageRow
    data: bytes
    stat: os.stat_result


class Batch:
    """One batch of paths through ingest's steps: ``start`` reads the files and hands their
    preparation to the pool; ``finish`` embeds and stores them."""

    def __init__(self, store: Store, pipeline: Pipeline, images_dir, pool: ThreadPoolExecutor,
                 node: ThisNode):
        self.store, self.pipeline, self.images_dir = store, pipeline, images_dir
        self.report, self.pool, self.node = IngestReport(), pool, node
        self.claimed: set[str] = set()  # released once the batch is stored
        self.model, self.limits = pipeline.model_id, pipeline.limits
        self.rows: list[ImageRow] = []  # rows to store
        self.gone: list[str] = []  # paths to forget
        self.embedded: dict[str, ImageRow] = {}  # the embedded row of each content hash
        self.postponed: dict[str, TransientError] = {}  # content met by a passing failure
        self.lost: set[str] = set()  # paths whose claims passed to another node meanwhile

    def start(self, paths: list[str], before: Batch | None = None) -> Batch:
        """Read the files and start preparing them. Content that ``before`` (the batch not
        stored yet) is preparing waits for its vector instead of being prepared twice."""
        self.before = before
        self.claimed = self.node.claims.take(file_claim(path) for path in paths)
        self.report.elsewhere = [path for path in paths if file_claim(path) not in self.claimed]
        paths = [path for path in paths if file_claim(path) in self.claimed]
        self.report.files = len(paths)
        self.reads = self._read(paths)
        to_prepare, self.copies, self.copies_of_before = self._sort_out_known(self.reads)
        # Files whose content another node prepares are not this batch's: drop their bytes.
        self.reads = [read for read in self.reads if read.row.path not in self.report.elsewhere]
        self.preparing = [(read, self.pool.submit(_prepare_one, self.pipeline, read.data))
                          for read in to_prepare]
        return self

    def finish(self) -> IngestReport:
        self._embed(self._prepared())
        self._resolve_copies(self.copies, self)
        if self.before is not None:
            self._resolve_copies(self.copies_of_before, self.before)
        self._store(self.reads)
        self.node.claims.release(self.claimed)
        self.reads, self.preparing, self.before = [], [], None  # the bytes, the batch before
        return self.report

    def _read(self, paths: list[str]) -> list[_Read]:
        """Read and hash the files that are new or changed; note the vanished ones."""
        known = self.store.file_states(paths)
        reads = []
        for path in paths:
            stat = image_stat(self.images_dir, path)
            if stat is None:
                self.gone.append(path)
            elif is_current(known.get(path), stat, self.model, self.limits):
                self.report.unchanged += 1
            else:
                read = self._read_file(path, stat)
                if read is not None:
                    reads.append(read)
        return reads

    def _read_file(self, path: str, stat: os.stat_result) -> _Read | None:
        """The file as read, or None when it changed meanwhile (it settles again). A file
        refused before it was read whole (too large, not an image) is stored as failed."""
        row = ImageRow(path, "", stat.st_size, stat.st_mtime_ns)
        try:
            data = self.pipeline.read_file(file_path(self.images_dir, path))
        except UnreadableFile:  # gone or locked meanwhile
            data = None
        except ImageError as exc:
            self._fail(row, str(exc))
            return None
        if data is None or changed_since(self.images_dir, path, stat):
            self.report.busy.append(path)
            return None
        return _Read(replace(row, sha256=hashlib.sha256(data).hexdigest()), data, stat)

    def _sort_out_known(self, reads: list[_Read]):
        """Reuse the vector of content already stored; of equal new bytes prepare the first
        file only, and only content this node could claim (the files of content another node
        prepares are left for later, to reuse its vector). Returns the files to prepare, the
        copies waiting for them, and the copies waiting for the batch before."""
        stored = self.store.indexed_rows({read.row.sha256 for read in reads}, self.model)
        preparing_before = ({read.row.sha256 for read, _ in self.before.preparing}
                            if self.before is not None else set())
        new = {read.row.sha256 for read in reads} - set(stored) - preparing_before
        held = self.node.claims.take(content_claim(sha256) for sha256 in new)
        self.claimed |= held
        to_prepare, copies, copies_of_before, first_hashes = [], [], [], set()
        for read in reads:
            row = read.row
            same = stored.get(row.sha256)
            if same is not None:
                self._reuse(same, row)
            elif row.sha256 in preparing_before:
                copies_of_before.append(row)
            elif content_claim(row.sha256) not in held:
                self.report.elsewhere.append(row.path)
                self.report.files -= 1
            elif row.sha256 in first_hashes:
                copies.append(row)
            else:
                first_hashes.add(row.sha256)
                to_prepare.append(read)
        return to_prepare, copies, copies_of_before

    def _prepared(self) -> list[tuple[ImageRow, Image.Image]]:
        """Each prepared image with its row; a file that could not be prepared is failed."""
        prepared = []
        for read, future in self.preparing:
            outcome, error = future.result()
            if isinstance(error, TransientError):
                self._later(read.row, error)
                continue
            if error is not None:
                self._fail(read.row, str(error))
                continue
            width, height = outcome.size
            prepared.append((replace(read.row, width=width, height=height, model=self.model,
                                     removal=outcome.removal), outcome.square))
        return prepared

    def _embed(self, prepared: list[tuple[ImageRow, Image.Image]]) -> None:
        try:
            vectors = self.pipeline.embed([image for _, image in prepared])
        except TransientError as exc:
            for row, _ in prepared:
                self._later(row, exc)
            return
        for (row, _), vector in zip(prepared, vectors, strict=True):
            self.embedded[row.sha256] = replace(row, vector=vector.tobytes())
            self.rows.append(self.embedded[row.sha256])
            log.info("indexed %s", row.path)
        self.report.embedded += len(prepared)

    def _resolve_copies(self, copies: list[ImageRow], source: Batch) -> None:
        """A copy shares the vector of the first file with its content (in ``source``), or
        fails alike, or waits alike."""
        failed = {row.sha256: row.error for row in source.rows if row.error is not None}
        for row in copies:
            if row.sha256 in source.embedded:
                self._reuse(source.embedded[row.sha256], row)
            elif row.sha256 in source.postponed:
                self._later(row, source.postponed[row.sha256])
            else:
                self._fail(row, failed[row.sha256])

    def _store(self, reads: list[_Read]) -> None:
        """Store every row whose file is still as it was read (a file replaced while it was
        embedded keeps no vector of its old content), forget the vanished paths."""
        changed = {read.row.path for read in reads
                   if changed_since(self.images_dir, read.row.path, read.stat)}
        self.report.busy += sorted(changed)
        keep = [row for row in self.rows if row.path not in changed]
        self.report.removed += self.store.write_rows(keep, self.gone, fence=self._lost)
        for path in self.gone:
            if path not in self.lost:
                log.info("removed %s", path)

    def _lost(self, session, paths: list[str]) -> set[str]:
        """The paths whose file claims passed to another node (the write's fence)."""
        lost = self.node.claims.lost(session, [file_claim(path) for path in paths])
        self.lost = {path for path in paths if file_claim(path) in lost}
        return self.lost

    def _reuse(self, same: ImageRow, row: ImageRow) -> None:
        self.rows.append(replace(same, path=row.path, size=row.size, mtime_ns=row.mtime_ns))
        log.info("indexed %s (same content as %s)", row.path, same.path)
        self.report.reused += 1

    def _later(self, row: ImageRow, error: TransientError) -> None:
        """A passing failure: nothing stored, the file tried again later (its copies in this
        batch then fail alike and are tried again with it)."""
        log.warning("%s: %s; trying again later", row.path, error)
        self.postponed[row.sha256] = error
        self.report.elsewhere.append(row.path)
        self.report.files -= 1

    def _fail(self, row: ImageRow, error: str) -> None:
        self.rows.append(replace(row, error=error, limits=self.pipeline.limits))
        log.warning("failed %s: %s", row.path, error)
        self.report.failed += 1


def _prepare_one(pipeline: Pipeline, data: bytes):
    """(prepare's result, None), or (None, the ImageError or TransientError) for an image the
    pipeline cannot handle, now or ever."""
    try:
        return pipeline.prepare(data), None
    except (ImageError, TransientError) as exc:
        return None, exc
