"""The snapshot writer: a background thread that writes feature_vectors.pkl from the store.

A catalogue of a million vectors makes a 2 GB snapshot; writing it in the service loop would
stall ingest and inbox answers for seconds, so the loop only asks for a write. Of several
nodes sharing a store, the one that holds the snapshot lead writes it; the others keep asking
for the lead while a write is wanted, and take over when its holder is gone. Every node saves
its own index in the same thread, when asked (search/saved.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from lookalike.daemon.retry import RetriedWrites
from lookalike.store.leader import SnapshotLeader
from lookalike.store.snapshot import publish_snapshot
from lookalike.store.store import Store

log = logging.getLogger(__name__)


class SnapshotWriter:
    def __init__(self, store: Store, model: str, path: Path, retry_seconds: float,
                 leader: SnapshotLeader, save_index: Callable[[], object]):
        """``save_index()``: save this node's index, where it is due, at each request."""
        self._store, self._model, self._path, self._leader = store, model, path, leader
        self._save_index = save_index
        self._retry_seconds = retry_seconds
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshot-writer")

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        """Write the snapshot soon; requests made during a write coalesce into one more."""
        self._wanted.set()

    def stop(self) -> None:
        """Finish the write in progress, if any, and end the thread."""
        self._stopping.set()
        self._wanted.set()
        if self._thread.ident is not None:  # started
            self._thread.join()
        self._leader.release()

    def _run(self) -> None:
        writes = RetriedWrites()
        while True:
            self._wanted.wait()
            if self._stopping.is_set():
                return
            self._wanted.clear()
            try:
                self._save_index()
            except OSError as exc:  # kept, and saved again with the next request
                writes.failed("index", f"cannot save the index beside {self._path}: {exc}")
            else:
                writes.succeeded("index", f"the index beside {self._path}")
            started = time.monotonic()
            try:
                if not self._leader.holds():  # another node writes it; ask again later
                    if self._stopping.wait(self._retry_seconds):
                        return
                    self._wanted.set()
                    continue
                size = publish_snapshot(self._store, self._model, self._path)
            except (OSError, SQLAlchemyError) as exc:
                # The previous snapshot stays intact; try again after a while.
                writes.failed(self._path, f"cannot write snapshot {self._path}: {exc}")
                if self._stopping.wait(self._retry_seconds):
                    return
                self._wanted.set()
                continue
            writes.succeeded(self._path, f"snapshot {self._path}")
            log.info("snapshot written: %d images in %.2f s", size, time.monotonic() - started)
