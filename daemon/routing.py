"""From watcher events to settling: which paths an event puts back through settling, and the
moves that rename rows instead (no re-embedding)."""

from __future__ import annotations

import logging
from pathlib import Path

from watchdog.events import FileSystemEvent

from lookalike.base.files import (
    IMAGE_SUFFIXES,
    QUERY_SUFFIXES,
    file_path,
    is_candidate,
    is_candidate_folder,
    relative_path,
    scan,
)
from lookalike.daemon.settings import Catalogue
from lookalike.daemon.settle import Settler
from lookalike.store.store import Store

log = logging.getLogger(__name__)


class EventRouter:
    def __init__(self, catalogue: Catalogue, store: Store, settler: Settler):
        self.images_dir, self.inbox_dir = catalogue.images_dir, catalogue.inbox_dir
        self.store, self.settler = store, settler

    def route(self, event: FileSystemEvent) -> None:
        if event.event_type == "moved":
            self._on_move(event.src_path, event.dest_path, event.is_directory)
        elif not event.is_directory:
            self.settle_later(Path(event.src_path))
        elif event.event_type == "deleted":
            self.settle_stored_under(event.src_path)
        elif event.event_type == "created":
            self.settle_tree(event.src_path)

    def settle_later(self, path: Path) -> None:
        """Settle ``path`` when it is a candidate in images_dir, or a query in inbox_dir."""
        for root, recursive, suffixes in ((self.images_dir, True, IMAGE_SUFFIXES),
                                          (self.inbox_dir, False, QUERY_SUFFIXES)):
            relative = relative_path(root, path)
            if relative is None:
                continue
            if is_candidate(relative, suffixes) and (recursive or "/" not in relative):
                self.settler.touch(path)
            return

    def settle_stored_under(self, folder: str) -> None:
        """Settle the stored images of a folder that went away like deleted files, so a move
        the watcher saw as delete + create still finds their vectors."""
        source = relative_path(self.images_dir, folder)
        if source:
            for path in self.store.paths_under(source):
                self.settler.touch(file_path(self.images_dir, path))

    def settle_tree(self, folder: str) -> None:
        """Settle every image of a folder that arrived in images_dir."""
        relative = relative_path(self.images_dir, folder)
        if relative is None:
            return
        try:
            found = scan(self.images_dir, "" if relative == "." else relative).files
        except OSError:
            return  # gone again
        for path in found:
            self.settler.touch(file_path(self.images_dir, path))

    def settle_inbox(self) -> None:
        """Settle every query in the inbox; those already answered are skipped when due."""
        try:
            queries = scan(self.inbox_dir, recursive=False, suffixes=QUERY_SUFFIXES).files
        except OSError:
            return  # missing: the watcher logs it and says when it is back
        for name in queries:
            self.settler.touch(file_path(self.inbox_dir, name))

    def _on_move(self, src: str, dest: str, is_directory: bool) -> None:
        source = relative_path(self.images_dir, src)
        destination = relative_path(self.images_dir, dest)
        if source is not None and destination is not None and self._rename_rows(
                source, destination, is_directory):
            return
        # Anything else is a deletion at the source and an arrival at the destination.
        if is_directory:
            self.settle_stored_under(src)
            self.settle_tree(dest)
        else:
            self.settle_later(Path(src))
            self.settle_later(Path(dest))

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
