"""The service loop in this process (a real watcher, SQLite file and pipeline), where a test
can watch how it feeds its batches."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace

from lookalike.api.app import App
from lookalike.daemon.ingest import Ingester
from lookalike.daemon.service import Service
from running import answer_of, stored


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_flood_is_ingested_in_overlapping_batches_and_the_inbox_still_answered(
        workspace, catalogue, monkeypatch):
    finished_by_feed = []  # batches that a later feed finished: they overlapped it
    feed = Ingester.feed

    def recording_feed(self, paths):
        report = feed(self, paths)
        finished_by_feed.append(report.files)
        return report

    monkeypatch.setattr(Ingester, "feed", recording_feed)
    app = App(workspace.config)
    daemon = replace(app.config.daemon, settle_seconds=0.2, batch_size=2)
    with app.opened_store() as store, app.node(store, "run") as node:
        service = Service(app.config.catalogue, daemon, 3, store, app.pipeline,
                          app.vector_index(), node)
        thread = threading.Thread(target=service.run)
        thread.start()
        try:
            for path in sorted(catalogue.iterdir())[:8]:
                shutil.copy(path, workspace.images / path.name)
            shutil.copy(catalogue / "item03.jpg", workspace.images / "copy.jpg")
            wait_for(lambda: len(stored(workspace)) == 9, "9 images stored")
            shutil.copy(catalogue / "item05.jpg", workspace.inbox / "query.jpg")
            wait_for(lambda: answer_of(workspace, "query.jpg"), "the answer")
        finally:
            service.stop()
            thread.join(30)
    assert not thread.is_alive()
    assert any(files for files in finished_by_feed)  # some batch waited while the next came
    rows = stored(workspace)
    assert {status for status, _ in rows.values()} == {"indexed"}
    assert rows["copy.jpg"] == rows["item03.jpg"]
    assert answer_of(workspace, "query.jpg")["neighbours"][0]["path"] == "item05.jpg"
