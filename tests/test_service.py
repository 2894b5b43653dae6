"""End to end: ``lookalike run`` as a subprocess with a real watchdog observer and SQLite file."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal

import pytest

from builders import cropped_query, product_photo
from lookalike.store.snapshot import read_snapshot
from running import answer_of, lookalike, sha256, stored

pytestmark = pytest.mark.slow


def test_service_lifecycle(workspace, catalogue, service_factory):
    # The approximate index: the exact one serves the other end-to-end tests.
    workspace.write_config(pipeline={"index": "hnsw"})
    service = service_factory()

    # A dozen images arrive (one written in pieces: tests/test_service_steps.py).
    for path in sorted(catalogue.iterdir())[:12]:
        shutil.copy(path, workspace.images / path.name)
    service.wait_for(lambda: len(stored(workspace)) == 12, "12 images indexed")
    rows = stored(workspace)
    assert all(status == "indexed" for status, _ in rows.values())
    assert rows["item11.jpg"][1] == sha256(catalogue / "item11.jpg")
    assert service.log().count("indexed item11.jpg") == 1
    # Debounced: the burst costs a refresh or two, not one per file.
    assert service.log().count("snapshot written") <= 3
    assert service.log().count("index loaded") == 1  # later images were added, not rebuilt

    # A shopper's photo: a resized, cropped copy of item07.
    cropped_query(product_photo(7)).save(workspace.inbox / "shopper.jpg")
    service.wait_for(lambda: answer_of(workspace, "shopper.jpg"), "the inbox answer")
    answer = answer_of(workspace, "shopper.jpg")
    assert answer["neighbours"][0]["path"] == "item07.jpg"
    assert answer["index_size"] == 12 and answer["k"] == 10 and "error" not in answer
    assert not any("shopper" in n["path"] for n in answer["neighbours"])

    # Same bytes under a second name: stored, not embedded again.
    shutil.copy(workspace.images / "item03.jpg", workspace.images / "dup.jpg")
    service.wait_for(lambda: "dup.jpg" in stored(workspace), "the duplicate")
    assert "indexed dup.jpg (same content as item03.jpg)" in service.log()

    # Delete one; move another into a new folder: the path changes, nothing is re-embedded.
    (workspace.images / "item00.jpg").unlink()
    (workspace.images / "tops").mkdir()
    os.rename(workspace.images / "item01.jpg", workspace.images / "tops" / "item01.jpg")
    service.wait_for(
        lambda: {"item00.jpg", "item01.jpg"}.isdisjoint(stored(workspace))
        and "tops/item01.jpg" in stored(workspace),
        "the delete and the move",
    )
    assert not re.search(r"indexed tops/item01\.jpg$", service.log(), re.MULTILINE)
    os.rename(workspace.images / "item05.jpg", workspace.images / "renamed05.jpg")
    service.wait_for(lambda: "renamed05.jpg" in stored(workspace), "the rename")
    assert "item05.jpg" not in stored(workspace)
    assert "moved item05.jpg -> renamed05.jpg" in service.log()
    service.wait_for(
        lambda: sorted(read_snapshot(workspace.root / "feature_vectors.pkl")["paths"])
        == sorted(stored(workspace)),
        "the snapshot to match the store",
    )

    # A corrupt file is recorded as failed; the service keeps answering.
    (workspace.images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    service.wait_for(lambda: "broken.jpg" in stored(workspace), "the corrupt file")
    assert stored(workspace)["broken.jpg"][0] == "failed"
    cropped_query(product_photo(9)).save(workspace.inbox / "second.png")
    service.wait_for(lambda: answer_of(workspace, "second.png"), "the second answer")
    assert answer_of(workspace, "second.png")["neighbours"][0]["path"] == "item09.jpg"

    # The CLI answers from the live store while the service runs.
    query = workspace.root / "cli-query.jpg"
    cropped_query(product_photo(10)).save(query)
    answer = json.loads(lookalike(workspace, "query", str(query), "--json").stdout)
    assert answer["neighbours"][0]["path"] == "item10.jpg"
    status = json.loads(lookalike(workspace, "status", "--json").stdout)
    assert [node["pid"] for node in status["nodes"]] == [service.process.pid]
    assert status["failed"] == 1

    # A second service, or a one-shot index, on the same database refuses to start.
    for command in ("run", "index"):
        second = lookalike(workspace, command)
        assert second.returncode == 1
        assert len(second.stderr.strip().splitlines()) == 1 and "already running" in second.stderr

    # The service never answers its own answers.
    assert sorted(p.name for p in workspace.inbox.iterdir()) == [
        "second.png", "second.png.neighbours.json", "shopper.jpg", "shopper.jpg.neighbours.json"
    ]

    assert service.stop() == 0
    assert "index saved: 12 images" in service.log()  # the graph, so the restart need not build it
    answered_at = (workspace.inbox / "shopper.jpg.neighbours.json").stat().st_mtime_ns

    # While stopped: delete, add, change. The restart reconciles all three.
    (workspace.images / "item02.jpg").unlink()
    product_photo(40).save(workspace.images / "new.jpg")
    product_photo(41).save(workspace.images / "item04.jpg")
    service = service_factory()
    service.wait_for(lambda: "new.jpg" in stored(workspace), "the restart's reconciliation")
    assert "index restored: 12 images" in service.log()
    rows = stored(workspace)
    assert "item02.jpg" not in rows
    assert rows["item04.jpg"] == ("indexed", sha256(workspace.images / "item04.jpg"))
    # Already answered queries are not answered again: a later one is, they are not.
    cropped_query(product_photo(5)).save(workspace.inbox / "after-restart.jpg")
    service.wait_for(lambda: answer_of(workspace, "after-restart.jpg"), "a later answer")
    assert (workspace.inbox / "shopper.jpg.neighbours.json").stat().st_mtime_ns == answered_at

    # Killed: the graph saved at the first stop is restored and brought up to date.
    service.kill()
    service = service_factory()
    cropped_query(product_photo(40)).save(workspace.inbox / "after-kill.jpg")
    service.wait_for(lambda: answer_of(workspace, "after-kill.jpg"), "the answer after kill -9")
    assert "index restored: 12 images" in service.log()
    answer = answer_of(workspace, "after-kill.jpg")
    assert answer["neighbours"][0]["path"] == "new.jpg" and answer["index_size"] == 12
    assert "item02.jpg" not in {n["path"] for n in answer["neighbours"]}
    assert service.stop(signal.SIGINT) == 0
    assert "Traceback" not in service.log()


def test_queries_are_answered_while_the_start_up_backlog_is_indexed(workspace, catalogue,
                                                                     service_factory):
    workspace.add_catalogue(catalogue)
    service = service_factory()
    service.wait_for(lambda: len(stored(workspace)) == 12, "the catalogue")
    assert service.stop() == 0
    for i in range(150):  # a backlog that takes a while: same photos, distinct bytes
        photo = product_photo(i % 12)
        photo.putpixel((i, 0), (i, 0, 0))
        photo.save(workspace.images / f"new{i:03d}.jpg")
    cropped_query(product_photo(3)).save(workspace.inbox / "early.jpg")
    service = service_factory()
    service.wait_for(lambda: answer_of(workspace, "early.jpg"), "the answer", timeout=60)
    assert len(stored(workspace)) < 12 + 150, "answered only after the whole backlog"
    assert answer_of(workspace, "early.jpg")["neighbours"][0]["path"] in (
        "item03.jpg", *(f"new{i:03d}.jpg" for i in range(3, 150, 12)))
    service.wait_for(lambda: len(stored(workspace)) == 162, "the backlog")
    service.wait_for(lambda: service.log().count("reconciled ") == 2,
                     "the end of the second backlog")
    assert service.stop() == 0
