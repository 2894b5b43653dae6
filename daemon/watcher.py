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
from watchdog.observers.api import BaseObserver
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
    def __init__(self, images_dir: Path, inbox_dir: Path, events: queue.Queue, polling: bool):
        self.folders = {images_dir: True, inbox_dir: False}  # folder -> recursive
        self.handler = QueueingHandler(events)
        self.polling = polling
        self._observer: BaseObserver | None = None
        self._inodes: dict[Path, int | None] = {}
        self._lost = threading.Event()
        self._alarm = _OverflowAlarm(self._lost)

    def start(self) -> None:
        """Watch the folders; a missing one is waited for (``events_may_be_lost`` says when it
        is back)."""
        for name in WATCHDOG_LOGGERS:
            logging.getLogger(name).addHandler(self._alarm)
        if self._missing():
            self._wait(self._missing())
        else:
            self._start_observer()

    def stop(self) -> None:
        self._stop_observer()
        for name in WATCHDOG_LOGGERS:
            logging.getLogger(name).removeHandler(self._alarm)

    def events_may_be_lost(self) -> bool:
        """Check the watch; True when events may have been missed since the last check.

        While a watched folder is missing nothing is reported: a rescan then would forget
        every image of a folder that is only briefly away (an unmounted share, say).
        """
        lost = self._lost.is_set()
        self._lost.clear()
        if lost:
            log.warning("the watcher lost events (queue overflow)")
        if missing := self._missing():
            self._wait(missing)
            return False
        if self._observer is None or self._inodes != self._current_inodes():
            log.warning("a watched folder was replaced or came back; watching it again")
        elif not self._alive():
            log.warning("the watcher stopped unexpectedly; restarting it")
        else:
            return lost
        self._stop_observer()
        self._start_observer()
        return True

    def _missing(self) -> list[Path]:
        return [folder for folder, inode in self._current_inodes().items() if inode is None]

    def _current_inodes(self) -> dict[Path, int | None]:
        return {folder: _inode(folder) for folder in self.folders}

    def _wait(self, missing: list[Path]) -> None:
        if self._observer is not None or not self._inodes:
            log.error("watched folder missing: %s; waiting for it",
                      ", ".join(str(folder) for folder in missing))
            self._inodes = {folder: None for folder in self.folders}
        self._stop_observer()

    def _alive(self) -> bool:
        observer = self._observer
        return observer.is_alive() and all(e.is_alive() for e in observer.emitters)

    def _start_observer(self) -> None:
        self._inodes = self._current_inodes()
        try:
            self._observer = self._schedule(_polling_observer() if self.polling else Observer())
        except OSError as exc:
            if self._missing():
                return  # a folder went away meanwhile: the next check waits for it
            log.error("cannot watch with inotify (%s); polling instead", os.strerror(exc.errno))
            self._observer = self._schedule(_polling_observer())

    def _schedule(self, observer: BaseObserver) -> BaseObserver:
        for folder, recursive in self.folders.items():
            observer.schedule(self.handler, str(folder), recursive=recursive)
        try:
            observer.start()
        except BaseException:
            observer.stop()
            raise
        return observer

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
