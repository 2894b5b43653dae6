"""`lookalike run`: watch images_dir and inbox_dir and keep the index and answers current.

The watchdog handler only queues events; this loop settles paths, ingests images in
batches, answers inbox queries and refreshes the snapshot and index, debounced.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from lookalike.pipeline.pipeline import Pipeline
from lookalike.store.atomic import write_atomically
from lookalike.store.index import NeighbourIndex
from lookalike.store.query import answer_queries, load_index, publish_snapshot
from lookalike.store.store import Store

from .files import ANSWER_SUFFIX, is_candidate, regular_file_inside, relative_path, scan
from .ingest import ingest
from .reconcile import reconcile
from .settle import Settler

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ServiceSettings:
    images_dir: Path
    inbox_dir: Path
    snapshot: Path
    k: int
    settle_seconds: float
    batch_size: int
    # During a long ingest the index is refreshed at most this often; at once when idle.
    refresh_interval: float = 30.0


class QueueingHandler(FileSystemEventHandler):
    """Puts every event on a queue; the service loop does the work."""

    def __init__(self, events: queue.Queue):
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):
            self.events.put(event)


def answer_path(query: Path) -> Path:
    return query.with_name(query.name + ANSWER_SUFFIX)


def is_answered(query: Path) -> bool:
    """True when the query's JSON is newer than the query itself."""
    try:
        return answer_path(query).stat().st_mtime_ns >= query.stat().st_mtime_ns
    except OSError:
        return False


class Service:
    def __init__(self, settings: ServiceSettings, store: Store, pipeline: Pipeline):
        self.settings = settings
        self.store = store
        self.pipeline = pipeline
        self.events: queue.Queue[FileSystemEvent] = queue.Queue()
        self.settler = Settler(settings.settle_seconds)
        self._stop = threading.Event()
        self._index: NeighbourIndex | None = None
        self._dirty = True
        self._last_refresh = 0.0
        self._snapshot_retry_at = 0.0
        self._vanished: set[str] = set()  # settled paths whose file is gone, not yet forgotten

    def stop(self) -> None:
        """Ask the loop to finish its current step and return (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        settings = self.settings
        settings.images_dir.mkdir(parents=True, exist_ok=True)
        settings.inbox_dir.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        handler = QueueingHandler(self.events)
        observer.schedule(handler, str(settings.images_dir), recursive=True)
        observer.schedule(handler, str(settings.inbox_dir), recursive=False)
        observer.start()
        try:
            # Watching starts first, so nothing that changes during reconciliation is missed.
            report = reconcile(self.store, self.pipeline, settings.images_dir, settings.batch_size)
            log.info("reconciled %s: %s", settings.images_dir, report)
            self._refresh()
            for name in scan(settings.inbox_dir):
                if "/" not in name:
                    self.settler.touch(settings.inbox_dir / name)
            log.info("watching %s and %s", settings.images_dir, settings.inbox_dir)
            while not self._stop.is_set():
                self._step()
        finally:
            observer.stop()
            observer.join()
            log.info("stopped")

    def _step(self) -> None:
        try:
            self._on_event(self.events.get(timeout=POLL_SECONDS))
            while True:
                self._on_event(self.events.get_nowait())
        except queue.Empty:
            pass
        images_dir = self.settings.images_dir
        settled = self.settler.pop_settled()
        queries = [p for p in settled if p.parent == self.settings.inbox_dir]
        images = [r for r in (relative_path(images_dir, p) for p in settled) if r]
        present = [p for p in images if regular_file_inside(images_dir, p)]
        self._vanished.update(set(images) - set(present))
        now = time.monotonic()
        idle = not any(p.is_relative_to(images_dir) for p in self.settler.pending())
        overdue = now - self._last_refresh >= self.settings.refresh_interval
        # A move the watcher saw as delete + create: forgetting the old path only once the
        # new one has arrived lets ingest reuse its vector instead of embedding it again.
        gone = sorted(self._vanished) if idle or overdue else []
        self._vanished.difference_update(gone)
        if present or gone:
            report = ingest(self.store, self.pipeline, images_dir, present + gone,
                            self.settings.batch_size)
            self._dirty = self._dirty or report.changed
        if queries:
            self._answer(queries)
        if self._dirty and (idle or overdue):
            self._refresh()
        elif self._snapshot_retry_at and now >= self._snapshot_retry_at:
            self._publish()

    def _refresh(self) -> None:
        """Rebuild the in-memory index from the store, then publish the snapshot."""
        self._index = load_index(self.store, self.pipeline.model_id)
        self._dirty = False
        self._last_refresh = time.monotonic()
        log.info("index refreshed: %d images", self._index.size)
        self._publish()

    def _publish(self) -> None:
        try:
            publish_snapshot(self.store, self._index, self.settings.snapshot)
        except OSError as exc:
            # The previous snapshot stays intact; try again after a while.
            log.error("cannot write snapshot %s: %s (will retry)", self.settings.snapshot, exc)
            self._snapshot_retry_at = time.monotonic() + self.settings.refresh_interval
        else:
            self._snapshot_retry_at = 0.0
        self._vanished: set[str] = set()  # settled paths whose file is gone, not yet forgotten

    def _on_event(self, event: FileSystemEvent) -> None:
        images_dir = self.settings.images_dir
        source = relative_path(images_dir, event.src_path)
        if event.event_type == "moved":
            destination = relative_path(images_dir, event.dest_path)
            if source is not None and destination is not None and self._move(source, destination,
                                                                             event.is_directory):
                return
            if source is not None:
                self._touch_tree(event.src_path, event.is_directory)
            self._touch_tree(event.dest_path, event.is_directory)
        elif event.is_directory:
            if event.event_type == "deleted" and source is not None:
                self._dirty |= self.store.delete_folder(source) > 0
            elif event.event_type == "created":
                self._touch_tree(event.src_path, True)
        else:
            self._touch(Path(event.src_path))

    def _move(self, source: str, destination: str, is_directory: bool) -> bool:
        """Rename rows in the store without re-embedding; False when nothing was known."""
        if is_directory:
            moved = self.store.move_folder(source, destination) > 0
        else:
            moved = is_candidate(destination) and self.store.move(source, destination)
        if moved:
            log.info("moved %s -> %s", source, destination)
            self._dirty = True
        return moved

    def _touch_tree(self, path: str, is_directory: bool) -> None:
        if not is_directory:
            self._touch(Path(path))
        elif relative_path(self.settings.images_dir, path) is not None:
            for relative in scan(Path(path)):
                self._touch(Path(path) / relative)

    def _touch(self, path: Path) -> None:
        for root in (self.settings.images_dir, self.settings.inbox_dir):
            relative = relative_path(root, path)
            if relative is None:
                continue
            if is_candidate(relative) and (root == self.settings.images_dir or "/" not in relative):
                self.settler.touch(path)
            return

    def _answer(self, paths: list[Path]) -> None:
        queries = []
        for path in paths:
            if is_answered(path):
                continue
            try:
                queries.append((path, path.read_bytes()))
            except OSError as exc:  # vanished or unreadable: nobody to answer
                log.warning("cannot read query %s: %s", path, exc)
        if not queries:
            return
        if self._dirty or self._index is None:
            self._refresh()
        answers = answer_queries(
            self.pipeline, self._index, [(p.name, data) for p, data in queries], self.settings.k
        )
        for (path, _), answer in zip(queries, answers, strict=True):
            try:
                write_atomically(answer_path(path), json.dumps(answer, indent=2).encode())
            except OSError as exc:
                log.error("cannot write answer for %s: %s", path, exc)
                continue
            log.info("answered %s (%d neighbours)", path.name, len(answer["neighbours"]))
