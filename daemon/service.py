"""`lookalike run`: watch images_dir and inbox_dir and keep the index and answers current.

The watcher only queues events. This loop settles paths, ingests images in batches, brings
the in-memory index up to date after each batch (only the paths that changed), answers inbox
queries, and asks a background writer for a new snapshot, debounced. It rescans the folder
periodically and whenever the watcher may have lost events.

Several services (nodes) may share one database and images_dir: each sees every change, and
the claims in the database decide which node embeds a file or answers a query. While the
database cannot be reached, the loop logs it once, retries with backoff, and rescans when it
is back.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from sqlalchemy.exc import InterfaceError, OperationalError
from watchdog.events import FileSystemEvent

from lookalike.base.atomic import write_atomically
from lookalike.base.errors import ImageError, UnreadableFile
from lookalike.daemon.failures import RetriedWrites
from lookalike.daemon.files import (
    file_path,
    image_stat,
    is_candidate,
    is_candidate_folder,
    relative_path,
    scan,
    stored_name,
)
from lookalike.daemon.inbox import answer_path, is_answered, query_digest
from lookalike.daemon.ingest import CLAIM_RETRY_SECONDS, Ingester, IngestReport, preparing_pool
from lookalike.daemon.reconcile import BacklogProgress, Differences, ImagesDirMissing, differences
from lookalike.daemon.settle import Settler
from lookalike.daemon.snapshots import SnapshotWriter
from lookalike.daemon.watcher import Watcher
from lookalike.pipeline.pipeline import Pipeline
from lookalike.pipeline.steps import VectorIndex
from lookalike.search.follow import FollowedIndex
from lookalike.search.query import answer_queries
from lookalike.store.leader import SnapshotLeader
from lookalike.store.nodes import ThisNode
from lookalike.store.store import Store

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
STATUS_SECONDS = 1.0
# Waits between tries to reach the database again, doubled from the first up to the last.
OUTAGE_RETRY_SECONDS = (1.0, 30.0)


@dataclass(frozen=True)
class ServiceSettings:
    images_dir: Path
    inbox_dir: Path
    snapshot: Path
    k: int
    settle_seconds: float
    batch_size: int
    polling: bool = False
    rescan_seconds: float = 600.0
    max_removal_fraction: float = 0.5
    # During a long ingest the snapshot is rewritten at most this often; at once when idle.
    refresh_interval: float = 30.0
    # A snapshot or answer that could not be written is tried again after this long.
    retry_seconds: float = 5.0


class LastProblem(logging.Handler):
    """Remembers the last warning or error logged, for `lookalike status`."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {record.getMessage()}"


class Service:
    def __init__(self, settings: ServiceSettings, store: Store, pipeline: Pipeline,
                 empty_index: VectorIndex, node: ThisNode):
        self.settings = settings
        self.store = store
        self.pipeline = pipeline
        self.node = node
        self._empty_index = empty_index
        self._pool = preparing_pool()
        self._ingester = Ingester(store, pipeline, settings.images_dir, self._pool, node)
        self.events: queue.Queue[FileSystemEvent] = queue.Queue()
        self.settler = Settler(settings.settle_seconds)
        self.watcher = Watcher(settings.images_dir, settings.inbox_dir, self.events,
                               settings.polling)
        self._stop = threading.Event()
        self._index: FollowedIndex | None = None  # loaded by run()
        self._snapshot_due = True
        self._last_refresh = 0.0
        self._snapshots = SnapshotWriter(store, pipeline.model_id, settings.snapshot,
                                         settings.retry_seconds, SnapshotLeader(store))
        self._next_rescan = 0.0
        self._ready: dict[str, None] = {}  # settled images, in arrival order, one batch a step
        self._backlog = BacklogProgress(0)
        self._vanished: set[str] = set()  # settled paths whose file is gone, not yet forgotten
        self._retry_at: dict[Path, float] = {}  # unwritten answers -> when to try again
        self._answer_writes = RetriedWrites()
        self._problem = LastProblem()
        self._status: tuple | None = None
        self._status_at = 0.0
        self._embedded = 0  # by this node, for `lookalike status`

    def stop(self) -> None:
        """Ask the loop to finish its current file and return (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        settings = self.settings
        # images_dir is never made: a missing one (an unmounted share) is waited for.
        settings.inbox_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("lookalike").addHandler(self._problem)
        # Watching starts first, so nothing that changes during reconciliation is missed.
        self.watcher.start()
        self._snapshots.start()
        try:
            # Queries are answered from what the store holds while the backlog is worked off.
            started = time.monotonic()
            self._index = FollowedIndex(self.store, self.pipeline.model_id, self._empty_index)
            log.info("index loaded: %d images in %.1f s (%s)", self._index.size,
                     time.monotonic() - started, self._empty_index.id)
            self._reconcile()
            self._next_rescan = time.monotonic() + settings.rescan_seconds
            self._settle_inbox()
            log.info("watching %s and %s", settings.images_dir, settings.inbox_dir)
            outage = None
            while not self._stop.is_set():
                try:
                    if outage is not None:
                        self.node.claims.release_all()  # a rescan redoes them
                        outage = None
                        log.warning("database reachable again")
                        self._rescan("the database was unreachable")
                    self._step()
                except (OperationalError, InterfaceError) as exc:
                    outage = self._wait_out(exc, outage)
        finally:
            self.watcher.stop()
            self._snapshots.stop()
            self._pool.shutdown()
            logging.getLogger("lookalike").removeHandler(self._problem)
            log.info("stopped")

    def _wait_out(self, exc: Exception, waited: float | None) -> float:
        """The database went away during a step: log it once, wait longer each time, and
        start the batch afresh (a rescan finds whatever was not stored)."""
        first, longest = OUTAGE_RETRY_SECONDS
        wait = first if waited is None else min(2 * waited, longest)
        if waited is None:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            log.error("database unreachable (%s): retrying, up to every %.0f s", reason,
                      longest)
            self._ingester = Ingester(self.store, self.pipeline, self.settings.images_dir,
                                      self._pool, self.node)
        self._stop.wait(wait)
        return wait

    def _reconcile(self) -> None:
        """Queue what changed while the service was stopped, as its start-up backlog."""
        try:
            found = self._differences()
        except ImagesDirMissing as exc:
            log.error("%s; waiting for it", exc)
            return
        self._ready.update(dict.fromkeys(found.paths))
        self._backlog = BacklogProgress(len(found.paths))
        log.info("reconciling %s: %d file(s) new, changed or gone; %d unchanged",
                 self.settings.images_dir, len(found.paths), found.current)

    def _differences(self) -> Differences:
        return differences(self.store, self.settings.images_dir, self.pipeline.model_id,
                           self.settings.max_removal_fraction)

    def _step(self) -> None:
        try:
            # Waits for an event only while no settled image waits for its batch.
            self._on_event(self.events.get(block=not self._ready, timeout=POLL_SECONDS))
            while True:
                self._on_event(self.events.get_nowait())
        except queue.Empty:
            pass
        now = time.monotonic()
        if self.watcher.events_may_be_lost():
            self._rescan("the watcher may have missed changes")
        elif now >= self._next_rescan:
            self._rescan("periodic")
        for path, retry_at in list(self._retry_at.items()):
            if now >= retry_at:
                del self._retry_at[path]
                self._settle_later(path)
        self._process(self.settler.pop_settled())
        self._publish_status()

    def _process(self, settled: list[Path]) -> None:
        """Ingest one batch of settled images, answer settled queries, refresh when due.

        One batch per step keeps a flood from starving the inbox and the refresh."""
        images_dir = self.settings.images_dir
        queries = [p for p in settled if p.parent == self.settings.inbox_dir]
        self._ready.update(dict.fromkeys(r for r in (relative_path(images_dir, p)
                                                      for p in settled) if r))
        batch = list(islice(self._ready, self.settings.batch_size))
        for path in batch:
            del self._ready[path]
        present = [p for p in batch if image_stat(images_dir, p)]
        self._vanished.update(set(batch) - set(present))
        now = time.monotonic()
        idle = not self._ready and not any(
            p.is_relative_to(images_dir) for p in self.settler.pending()
        )
        overdue = now - self._last_refresh >= self.settings.refresh_interval
        # A move the watcher saw as delete + create: forgetting the old path only once the
        # new one has arrived lets ingest reuse its vector instead of embedding it again.
        gone = sorted(self._vanished) if idle or overdue else []
        self._vanished.difference_update(gone)
        if present or gone:  # finishes the batch fed the step before, while this one prepares
            self._settle_busy(self._ingester.feed(present + gone))
        if idle or not (present or gone):  # nothing to overlap the waiting batch with
            self._settle_busy(self._ingester.flush())
        if self._backlog.advance(len(batch)):
            log.info("reconciled %s", images_dir)
        if self._index.refresh():  # what this batch and any moves wrote to the store
            self._snapshot_due = True
        if queries and not self._stop.is_set():
            self._answer(queries)
        if self._snapshot_due and (idle or overdue):
            self._snapshot_due = False
            self._last_refresh = now
            self._snapshots.request()

    def _settle_busy(self, report: IngestReport) -> None:
        """Files that changed while they were ingested are settled again; those another
        node holds are tried again after a while."""
        self._embedded += report.embedded
        for path in report.busy:
            self._settle_later(file_path(self.settings.images_dir, path))
        retry_at = time.monotonic() + CLAIM_RETRY_SECONDS
        for path in report.elsewhere:
            self._retry_at[file_path(self.settings.images_dir, path)] = retry_at

    def _rescan(self, reason: str) -> None:
        """Put every file that differs from the store back through settling and ingest."""
        self._next_rescan = time.monotonic() + self.settings.rescan_seconds
        try:
            paths = self._differences().paths
        except ImagesDirMissing:
            return  # the watcher logs it and says when it is back
        for path in paths:
            self.settler.touch(file_path(self.settings.images_dir, path))
        self._settle_inbox()
        level = logging.INFO if paths or reason != "periodic" else logging.DEBUG
        log.log(level, "rescan (%s): %d file(s) changed", reason, len(paths))

    def _settle_inbox(self) -> None:
        """Queue every query in the inbox; those already answered are skipped when due."""
        try:
            queries = scan(self.settings.inbox_dir, recursive=False).files
        except OSError:
            return  # missing: the watcher logs it and says when it is back
        for name in queries:
            self.settler.touch(file_path(self.settings.inbox_dir, name))

    def _publish_status(self) -> None:
        """Queue length, images embedded and last problem, for `lookalike status`; written
        when they change, at most once a second."""
        now = time.monotonic()
        status = (len(self.settler) + len(self._ready) + self.events.qsize(), self._embedded,
                  self._problem.message)
        if status == self._status or now - self._status_at < STATUS_SECONDS:
            return
        self.node.report(*status)
        self._status, self._status_at = status, now

    def _on_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "moved":
            self._on_move(event.src_path, event.dest_path, event.is_directory)
        elif not event.is_directory:
            self._settle_later(Path(event.src_path))
        elif event.event_type == "deleted":
            self._settle_stored_under(event.src_path)
        elif event.event_type == "created":
            self._settle_tree(event.src_path)

    def _on_move(self, src: str, dest: str, is_directory: bool) -> None:
        images_dir = self.settings.images_dir
        source, destination = relative_path(images_dir, src), relative_path(images_dir, dest)
        if source is not None and destination is not None and self._rename_rows(
                source, destination, is_directory):
            return
        # Anything else is a deletion at the source and an arrival at the destination.
        if is_directory:
            self._settle_stored_under(src)
            self._settle_tree(dest)
        else:
            self._settle_later(Path(src))
            self._settle_later(Path(dest))

    def _rename_rows(self, source: str, destination: str, is_directory: bool) -> bool:
        """Rename rows without re-embedding when the destination is still a candidate;
        False when nothing was renamed."""
        if is_directory:
            moved = is_candidate_folder(destination) and self.store.move_folder(source,
                                                                                destination)
        else:
            moved = is_candidate(destination) and self.store.move(source, destination)
        if moved:
            log.info("moved %s -> %s", source, destination)
        return bool(moved)

    def _settle_stored_under(self, folder: str) -> None:
        """Settle the stored images of a folder that went away like deleted files, so a move
        the watcher saw as delete + create still finds their vectors."""
        source = relative_path(self.settings.images_dir, folder)
        if source:
            for path in self.store.paths_under(source):
                self.settler.touch(file_path(self.settings.images_dir, path))

    def _settle_tree(self, folder: str) -> None:
        """Settle every image of a folder that arrived in images_dir."""
        images_dir = self.settings.images_dir
        relative = relative_path(images_dir, folder)
        if relative is None:
            return
        try:
            found = scan(images_dir, "" if relative == "." else relative).files
        except OSError:
            return  # gone again
        for path in found:
            self.settler.touch(file_path(images_dir, path))

    def _settle_later(self, path: Path) -> None:
        """Settle ``path`` when it is a candidate in images_dir, or a query in inbox_dir."""
        for root, recursive in ((self.settings.images_dir, True), (self.settings.inbox_dir, False)):
            relative = relative_path(root, path)
            if relative is None:
                continue
            if is_candidate(relative) and (recursive or "/" not in relative):
                self.settler.touch(path)
            return

    def _answer(self, paths: list[Path]) -> None:
        """Answer the queries not answered yet that this node could claim (a shared inbox
        gets one answer, whichever node gives it); the others are tried again later."""
        unanswered = {}
        for path in paths:
            digest = query_digest(path)
            if digest is not None and not is_answered(path, digest):
                unanswered[f"query:{stored_name(path.name)}:{digest}"] = path, digest
        held = self.node.claims.take(unanswered)
        try:
            self._answer_claimed([unanswered[key] for key in held])
        finally:
            self.node.claims.release(held)
        retry_at = time.monotonic() + CLAIM_RETRY_SECONDS
        for key in unanswered.keys() - held:
            self._retry_at[unanswered[key][0]] = retry_at

    def _answer_claimed(self, claimed: list[tuple[Path, str]]) -> None:
        queries = []
        for path, digest in claimed:
            if is_answered(path, digest):  # by the node that held it before
                continue
            try:
                data = self.pipeline.read_file(path)
            except UnreadableFile as exc:
                log.warning("query %s: %s", stored_name(path.name), exc)
                continue
            except ImageError as exc:
                data = exc
            queries.append((path, digest, data))
        if not queries:
            return
        answers = answer_queries(
            self.pipeline, self._index,
            [(stored_name(path.name), data) for path, _, data in queries], self.settings.k,
        )
        for (path, digest, _), answer in zip(queries, answers, strict=True):
            answer["query_sha256"] = digest
            self._write_answer(path, answer)

    def _write_answer(self, path: Path, answer: dict) -> None:
        try:
            write_atomically(answer_path(path), json.dumps(answer, indent=2).encode())
        except OSError as exc:  # the query stays unanswered until a retry works
            self._answer_writes.failed(path, f"cannot write answer for {answer['query']}: {exc}")
            self._retry_at[path] = time.monotonic() + self.settings.retry_seconds
            return
        self._answer_writes.succeeded(path, f"answer for {answer['query']}")
        if "error" in answer:
            log.warning("answered %s with error: %s", answer["query"], answer["error"])
        else:
            log.info("answered %s (%d neighbours)", answer["query"], len(answer["neighbours"]))
