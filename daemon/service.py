"""`lookalike run`: watch images_dir and inbox_dir and keep the index and answers current.

The service is a short loop over named parts: the watcher queues events; the router turns
them into paths to settle (or rows to rename); settled images wait in the ingest queue and go
through ingest a batch per step; the in-memory index follows the store; the answerer answers
settled queries; the snapshot writer (a thread) rewrites the snapshot when asked, debounced;
retries and rescans come due on an injected clock, so tests can drive the loop step by step.

Several services (nodes) may share one database and images_dir: each sees every change, and
the claims in the database decide which node embeds a file or answers a query. While the
database cannot be reached, the loop logs it once, retries with backoff, and rescans when it
is back.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy.exc import DBAPIError
from watchdog.events import FileSystemEvent

from lookalike.base.files import file_path, relative_path
from lookalike.daemon.inbox import InboxAnswerer
from lookalike.daemon.ingest import CLAIM_RETRY_SECONDS, Ingester, IngestReport, preparing_pool
from lookalike.daemon.ingest_queue import BacklogProgress, IngestQueue
from lookalike.daemon.reconcile import Differences, ImagesDirMissing, differences
from lookalike.daemon.retry import RetryTimes
from lookalike.daemon.root import take_root
from lookalike.daemon.routing import EventRouter
from lookalike.daemon.settings import Catalogue, DaemonSettings
from lookalike.daemon.settle import Settler
from lookalike.daemon.snapshots import SnapshotWriter
from lookalike.daemon.status import StatusReporter
from lookalike.daemon.watcher import Watcher
from lookalike.pipeline.pipeline import Pipeline
from lookalike.pipeline.steps import VectorIndex
from lookalike.search.follow import FollowedIndex
from lookalike.store.leader import SnapshotLeader
from lookalike.store.nodes import ThisNode
from lookalike.store.snapshot import snapshot_generation
from lookalike.store.store import OUTAGE_RETRY_SECONDS, Store, is_outage

log = logging.getLogger(__name__)

# The longest the loop waits for a watcher event while nothing else is to be done.
POLL_SECONDS = 0.2
# A loop that has not turned for this long is stuck: a turn lasts one batch at most.
STALLED_SECONDS = 60.0
# The index is saved (where it is slow to build) at most this often, and when the service stops.
SAVE_INDEX_SECONDS = 600.0


class Service:
    def __init__(self, catalogue: Catalogue, daemon: DaemonSettings, k: int, store: Store,
                 pipeline: Pipeline, empty_index: VectorIndex, node: ThisNode,
                 clock: Callable[[], float] = time.monotonic,
                 on_backlog: BacklogProgress | None = None,
                 stop: threading.Event | None = None):
        self.catalogue, self.daemon, self.k = catalogue, daemon, k
        self.store, self.pipeline, self.node, self.clock = store, pipeline, node, clock
        self._empty_index = empty_index
        self._pool = preparing_pool()
        self.events: queue.Queue[FileSystemEvent] = queue.Queue()
        self.watcher = Watcher(catalogue.images_dir, catalogue.inbox_dir, self.events,
                               daemon.polling)
        self.settler = Settler(daemon.settle_seconds, clock)
        self.router = EventRouter(catalogue, store, self.settler)
        self.waiting = IngestQueue(catalogue.images_dir, daemon.batch_size, on_backlog)
        self.retries = RetryTimes(clock)
        self.status = StatusReporter(node, clock)
        self._ingester = self._new_ingester()
        self._snapshots = SnapshotWriter(store, pipeline.model_id, catalogue.snapshot,
                                         daemon.retry_seconds, SnapshotLeader(node.claims),
                                         self._save_index)
        self._index_saved_at = clock()
        self._stop = stop or threading.Event()  # set: finish the current step and return
        self.index: FollowedIndex | None = None  # loaded by start()
        self.answerer: InboxAnswerer | None = None
        self._snapshot_due = True
        self._last_refresh = float("-inf")
        self._next_rescan = 0.0
        self._outage: float | None = None  # the last wait while the database is away

    def stop(self) -> None:
        """Ask the loop to finish its current step and return (safe from a signal handler)."""
        self._stop.set()

    def run(self, beside: Callable[[Service], AbstractContextManager] | None = None) -> None:
        """Start, turn until stopped, close. ``beside(self)``: a context entered once started
        and left before closing (the HTTP server)."""
        try:
            self.start()
            with beside(self) if beside else contextlib.nullcontext():
                while not self._stop.is_set():
                    self.step()
        finally:
            self.close()

    def stalled(self) -> str | None:
        """Why the loop looks stuck, or None while it turns."""
        idle = self.clock() - self.status.turned_at
        if idle > STALLED_SECONDS:
            return f"the service loop has not turned for {idle:.0f} s"
        return None

    def start(self) -> None:
        """Watch, load the index, and queue what changed while nothing was watching."""
        # images_dir is never made: a missing one (an unmounted share) is waited for.
        self.catalogue.inbox_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("lookalike").addHandler(self.status.problem)
        take_root(self.store, self.catalogue.images_dir)
        # Watching starts first, so nothing that changes during reconciliation is missed.
        self.watcher.start()
        self._snapshots.start()
        # Queries are answered from what the store holds while the backlog is worked off.
        started = time.monotonic()
        self.index = FollowedIndex(self.store, self.pipeline.model_id, self._empty_index,
                                   self.catalogue.snapshot)
        log.info("index %s: %d images in %.1f s (%s)",
                 "restored" if self.index.restored else "loaded", self.index.size,
                 time.monotonic() - started, self._empty_index.id)
        if not self.index.restored:  # a graph just built is saved with the first snapshot:
            self._index_saved_at = float("-inf")  # a crash must not cost the build again
        # A start that changed nothing leaves a snapshot of this generation as it is.
        self._snapshot_due = (snapshot_generation(self.catalogue.snapshot, self.pipeline.model_id)
                              != self.index.generation)
        self.answerer = InboxAnswerer(self.pipeline, self.index, self.node, self.k,
                                      self.retries, CLAIM_RETRY_SECONDS,
                                      self.daemon.retry_seconds)
        self._reconcile()
        self._next_rescan = self.clock() + self.daemon.rescan_seconds
        self.router.settle_inbox()
        self.status.turned_at = self.clock()
        log.info("watching %s and %s", self.catalogue.images_dir, self.catalogue.inbox_dir)

    def close(self) -> None:
        """Stop what ``start`` started (also after it failed halfway)."""
        self.watcher.stop()
        self._snapshots.stop()
        if self.index is not None:
            try:
                self._save_index(now=True)
            except OSError as exc:
                log.error("cannot save the index beside %s: %s", self.catalogue.snapshot, exc)
        self._pool.shutdown()
        logging.getLogger("lookalike").removeHandler(self.status.problem)
        log.info("stopped")

    def _save_index(self, now: bool = False) -> None:
        """Save the index where it is slow to build and SAVE_INDEX_SECONDS have passed (or
        ``now``): a restart restores it instead of building it again."""
        if self.index is None or not (now or self.clock() - self._index_saved_at
                                      >= SAVE_INDEX_SECONDS):
            return
        started = time.monotonic()
        if self.index.save(self.catalogue.snapshot):
            log.info("index saved: %d images in %.1f s", self.index.size,
                     time.monotonic() - started)
        self._index_saved_at = self.clock()

    def step(self) -> None:
        """One turn of the loop; while the database is away, one wait for it instead."""
        try:
            if self._outage is not None:
                self.node.claims.release_all()  # of the batches dropped; a rescan redoes them
                self._outage = None
                # Info, not a warning: the outage stays the last problem `status` shows.
                log.info("database reachable again")
                self._rescan("the database was unreachable")
            self._step()
        except DBAPIError as exc:
            if not is_outage(exc):
                raise
            self._wait_out(exc)

    def _step(self) -> None:
        self._route_events()
        if self.watcher.events_may_be_lost():
            self._rescan("the watcher may have missed changes")
        elif self.clock() >= self._next_rescan:
            self._rescan("periodic")
        for path in self.retries.pop_due():
            self.router.settle_later(path)
        settled = self.settler.pop_settled()
        idle, overdue = self._ingest_batch(settled)
        if self.index.refresh():  # what this batch and any moves wrote to the store
            self._snapshot_due = True
        queries = [path for path in settled if path.parent == self.catalogue.inbox_dir]
        if queries and not self._stop.is_set():
            self.answerer.answer(queries)
        if self._snapshot_due and (idle or overdue):
            self._snapshot_due = False
            self._last_refresh = self.clock()
            self._snapshots.request()
        self.status.publish(len(self.settler) + len(self.waiting) + self.events.qsize())

    def _route_events(self) -> None:
        """Every queued event; waits a moment for one only while no image waits for ingest."""
        try:
            self.router.route(self.events.get(block=not self.waiting, timeout=POLL_SECONDS))
            while True:
                self.router.route(self.events.get_nowait())
        except queue.Empty:
            pass

    def _ingest_batch(self, settled: list[Path]) -> tuple[bool, bool]:
        """Feed one batch of settled images to ingest (a flood then never starves the inbox
        and the refresh); returns whether the service is idle and whether a refresh is
        overdue."""
        images_dir = self.catalogue.images_dir
        self.waiting.add(r for r in (relative_path(images_dir, p) for p in settled) if r)
        present = self.waiting.next_batch()
        idle = not self.waiting and not any(
            p.is_relative_to(images_dir) for p in self.settler.pending())
        overdue = self.clock() - self._last_refresh >= self.daemon.refresh_seconds
        # A move the watcher saw as delete + create: forgetting the old path only once the
        # new one has arrived lets ingest reuse its vector instead of embedding it again.
        gone = self.waiting.take_vanished() if idle or overdue else []
        if present or gone:  # finishes the batch fed the step before, while this one prepares
            self._settle_busy(self._ingester.feed(present + gone))
        if idle or not (present or gone):  # nothing to overlap the waiting batch with
            self._settle_busy(self._ingester.flush())
        return idle, overdue

    def _settle_busy(self, report: IngestReport) -> None:
        """Files that changed while they were ingested are settled again; those another
        node holds are tried again after a while."""
        self.status.embedded += report.embedded
        for path in report.busy:
            self.settler.touch(file_path(self.catalogue.images_dir, path))
        for path in report.elsewhere:
            self.retries.later(file_path(self.catalogue.images_dir, path), CLAIM_RETRY_SECONDS)

    def _reconcile(self) -> None:
        """Queue what changed while the service was stopped, as its start-up backlog."""
        try:
            found = self._differences()
        except ImagesDirMissing as exc:
            log.error("%s; waiting for it", exc)
            return
        self.waiting.add_backlog(found.paths)
        log.info("reconciling %s: %d file(s) new, changed or gone; %d unchanged",
                 self.catalogue.images_dir, len(found.paths), found.current)

    def _differences(self) -> Differences:
        return differences(self.store, self.catalogue.images_dir, self.pipeline,
                           self.daemon.max_removal_fraction)

    def _rescan(self, reason: str) -> None:
        """Put every file that differs from the store back through settling and ingest."""
        self._next_rescan = self.clock() + self.daemon.rescan_seconds
        try:
            paths = self._differences().paths
        except ImagesDirMissing:
            return  # the watcher logs it and says when it is back
        for path in paths:
            self.settler.touch(file_path(self.catalogue.images_dir, path))
        self.router.settle_inbox()
        level = logging.INFO if paths or reason != "periodic" else logging.DEBUG
        log.log(level, "rescan (%s): %d file(s) changed", reason, len(paths))

    def _wait_out(self, exc: Exception) -> None:
        """The database went away during a step: log it once, wait longer each time, and
        start the batch afresh (a rescan finds whatever was not stored)."""
        first, longest = OUTAGE_RETRY_SECONDS
        if self._outage is None:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            log.error("database unreachable (%s): retrying, up to every %.0f s", reason,
                      longest)
            self.status.outages += 1
            self._ingester = self._new_ingester()
            self._outage = first
        else:
            self._outage = min(2 * self._outage, longest)
        # A node that cannot write says so in status, where the database still listens.
        with contextlib.suppress(DBAPIError):
            self.status.publish(len(self.settler) + len(self.waiting) + self.events.qsize())
        self._stop.wait(self._outage)

    def _new_ingester(self) -> Ingester:
        return Ingester(self.store, self.pipeline, self.catalogue.images_dir, self._pool,
                        self.node)
