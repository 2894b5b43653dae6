"""The watchdog observer over images_dir (recursive) and inbox_dir.

The handler only queues events. The watcher restarts the observer when a watched folder is
replaced or an observer thread dies, falls back to polling when inotify's watch limit is
reached, and reports every occasion on which events may have been lost, so that the service
rescans instead of silently missing files.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserverVFS

log = logging.getLogger(__name__)

# watchdog (7.1 and later) says so only in its log when the kernel's inotify queue overflowed.
WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


class QueueingHandler(FileSystemEventHandler):
    """Puts every event on a queue; the service loop does the work."""

    def __init__(self, events: queue.Queue):
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):
            self.events.put(event)


class _OverflowAlarm(logging.Handler):
    def __init__(self, alarm: threading.Event):
        super().__init__(logging.WARNING)
        self.alarm = alarm

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.alarm.set()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino if path.is_dir() else None
    except OSError:
        return None


class Watcher:
    """One observer; each folder is watched while it is there and waited for while it is
    not, so the inbox is answered while images_dir is away (an unmounted share)."""

    def __init__(self, images_dir: Path, inbox_dir: Path, events: queue.Queue, polling: bool):
        self.folders = {images_dir: True, inbox_dir: False}  # folder -> recursive
        self.handler = QueueingHandler(events)
        self.polling = polling
        self._observer: BaseObserver | None = None
        self._watches: dict[Path, ObservedWatch] = {}
        self._inodes: dict[Path, int | None] = {}  # of each folder as it is watched
        self._lost = threading.Event()
        self._alarm = _OverflowAlarm(self._lost)

    def start(self) -> None:
        for name in WATCHDOG_LOGGERS:
            logging.getLogger(name).addHandler(self._alarm)
        self._start_observer()

    def stop(self) -> None:
        self._stop_observer()
        for name in WATCHDOG_LOGGERS:
            logging.getLogger(name).removeHandler(self._alarm)

    def events_may_be_lost(self) -> bool:
        """Check the watch; True when events may have been missed since the last check.

        While a watched folder is missing nothing is reported for it: a rescan then would
        forget every image of a folder that is only briefly away (an unmounted share, say).
        """
        lost = self._lost.is_set()
        self._lost.clear()
        if lost:
            log.warning("the watcher lost events (queue overflow)")
        if not self._alive():
            log.warning("the watcher stopped unexpectedly; restarting it")
            self._stop_observer()
            self._start_observer()
            return True
        return self._follow_folders() or lost

    def _follow_folders(self) -> bool:
        """Watch each folder as it is now; True when one came back or was replaced."""
        came_back = False
        for folder, recursive in self.folders.items():
            inode = _inode(folder)
            known = folder in self._inodes
            if known and inode == self._inodes[folder]:
                continue
            self._unwatch(folder)
            self._inodes[folder] = inode
            if inode is None:
                log.error("watched folder missing: %s; waiting for it", folder)
            elif self._watch(folder, recursive) and known:
                log.warning("a watched folder was replaced or came back; watching it again")
                came_back = True
        return came_back

    def _watch(self, folder: Path, recursive: bool) -> bool:
        try:
            self._watches[folder] = self._observer.schedule(self.handler, str(folder),
                                                            recursive=recursive)
        except OSError as exc:
            if _inode(folder) is None:
                self._inodes[folder] = None  # gone meanwhile: waited for at the next check
                return False
            if isinstance(self._observer, PollingObserverVFS):
                raise
            log.error("cannot watch with inotify (%s); polling instead", os.strerror(exc.errno))
            self.polling = True
            self._stop_observer()
            self._start_observer()
        return True

    def _unwatch(self, folder: Path) -> None:
        watch = self._watches.pop(folder, None)
        if watch is not None:
            self._observer.unschedule(watch)

    def _alive(self) -> bool:
        observer = self._observer
        return observer.is_alive() and all(e.is_alive() for e in observer.emitters)

    def _start_observer(self) -> None:
        self._observer = _polling_observer() if self.polling else Observer()
        self._observer.start()
        self._inodes, self._watches = {}, {}
        self._follow_folders()

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            if self._observer.is_alive():
                self._observer.join()
            self._observer = None


def _polling_observer() -> BaseObserver:
    """Polling that sees links as links, as inotify and the rescans do: a linked folder is
    never entered (no files from outside, no loops)."""
    return PollingObserverVFS(stat=os.lstat, listdir=os.scandir)
