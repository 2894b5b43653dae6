"""The running service against awkward situations: bad queries, lost events, polling, signals."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import time

import pytest

from builders import cropped_query, product_photo
from lookalike.store.snapshot import read_snapshot
from running import answer_of, lookalike, stored

pytestmark = pytest.mark.slow


class RunsCode:
    def __reduce__(self):
        return (exec, (f"open({os.environ.get('MARKER', '/dev/null')!r}, 'w').write('ran')",))


def test_inbox_always_gets_an_answer(workspace, catalogue, service_factory, monkeypatch):
    # A crafted pickle where the snapshot lives is replaced, never run.
    marker = workspace.root / "marker"
    monkeypatch.setenv("MARKER", str(marker))
    (workspace.root / "feature_vectors.pkl").write_bytes(pickle.dumps(RunsCode()))

    service = service_factory()
    cropped_query(product_photo(4)).save(workspace.inbox / "early.jpg")
    service.wait_for(lambda: answer_of(workspace, "early.jpg"), "the empty-index answer")
    early = answer_of(workspace, "early.jpg")
    assert early["neighbours"] == [] and "holds no images" in early["error"]

    workspace.add_catalogue(catalogue)
    service.wait_for(lambda: len(stored(workspace)) == 12, "the catalogue")
    (workspace.inbox / "garbage.jpg").write_bytes(b"\x00" * 300)
    service.wait_for(lambda: answer_of(workspace, "garbage.jpg"), "the undecodable answer")
    garbage = answer_of(workspace, "garbage.jpg")
    assert garbage["neighbours"] == [] and garbage["error"] == "not an image Pillow can read"

    # The same name again, with new content, is answered again.
    time.sleep(0.05)
    cropped_query(product_photo(4)).save(workspace.inbox / "garbage.jpg")
    service.wait_for(lambda: answer_of(workspace, "garbage.jpg").get("neighbours"),
                     "the second answer")
    assert answer_of(workspace, "garbage.jpg")["neighbours"][0]["path"] == "item04.jpg"

    # Words, with ResNet-18: answered with why they cannot be searched.
    (workspace.inbox / "words.txt").write_text("red floral dress")
    service.wait_for(lambda: answer_of(workspace, "words.txt"), "the text query's answer")
    words = answer_of(workspace, "words.txt")
    assert words["neighbours"] == [] and "has no text tower" in words["error"]

    assert read_snapshot(workspace.root / "feature_vectors.pkl")["vectors"].shape == (12, 512)
    assert not marker.exists()
    assert service.stop() == 0


def test_a_folder_replaced_wholesale_is_rescanned(workspace, catalogue, service_factory):
    workspace.add_catalogue(catalogue, 6)
    service = service_factory()
    service.wait_for(lambda: len(stored(workspace)) == 6, "the first catalogue")

    os.rename(workspace.images, workspace.root / "images.old")
    workspace.images.mkdir()
    # Half the catalogue stays (more would be held back as an unmounted share's emptiness).
    for name in ("item01.jpg", "item02.jpg", "item03.jpg", "item07.jpg", "item08.jpg"):
        shutil.copy(catalogue / name, workspace.images / name)
    shutil.copy(catalogue / "item00.jpg", workspace.images / "kept.jpg")
    service.wait_for(lambda: set(stored(workspace)) == {
        "item01.jpg", "item02.jpg", "item03.jpg", "item07.jpg", "item08.jpg", "kept.jpg"},
        "the replaced folder to be reconciled")
    assert "watching it again" in service.log()
    # And the new folder is watched: a later file arrives as usual.
    shutil.copy(catalogue / "item09.jpg", workspace.images / "later.jpg")
    service.wait_for(lambda: "later.jpg" in stored(workspace), "a file in the new folder")
    assert service.stop() == 0


def test_polling_observer_for_network_filesystems(workspace, catalogue, service_factory):
    workspace.write_config(daemon={"settle_seconds": 0.5, "polling": True})
    service = service_factory()
    shutil.copy(catalogue / "item01.jpg", workspace.images / "a.jpg")
    service.wait_for(lambda: "a.jpg" in stored(workspace), "polling to see a new file")
    (workspace.images / "a.jpg").unlink()
    service.wait_for(lambda: "a.jpg" not in stored(workspace), "polling to see a delete")
    assert service.stop() == 0


def test_status_reports_the_running_service(workspace, catalogue, service_factory):
    service = service_factory()
    (workspace.images / "bad.jpg").write_bytes(b"nope")
    service.wait_for(lambda: "bad.jpg" in stored(workspace), "the bad file")

    def current_status() -> dict:
        return json.loads(lookalike(workspace, "status", "--json").stdout)

    # Published at most once a second.
    service.wait_for(lambda: "bad.jpg" in (current_status()["nodes"][0]["last_problem"] or ""),
                     "the problem in status")
    (node,) = current_status()["nodes"]
    assert node["pid"] == service.process.pid and node["live"]
    assert node["command"] == "run" and node["host"] == socket.gethostname()
    assert node["queue"] == 0 and node["embedded"] == 0
    assert "bad.jpg" in node["last_problem"]
    assert service.stop() == 0
    assert current_status()["nodes"] == []  # a node that stops signs off


def test_json_logs_one_object_per_line(workspace, catalogue, service_factory):
    service = service_factory(args=("--log-format", "json"))
    shutil.copy(catalogue / "item03.jpg", workspace.images / "odd\nname.jpg")
    service.wait_for(lambda: "odd\nname.jpg" in stored(workspace), "the file")
    assert service.stop(signal.SIGINT) == 0
    entries = [json.loads(line) for line in service.log().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["message"] == "indexed odd\nname.jpg" for e in entries)
