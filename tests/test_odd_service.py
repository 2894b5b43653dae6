"""The running service against what a hostile user does to its folders: odd names and formats
in the inbox, a folder that goes away, renames, links, replaced queries. It keeps running,
answers every query and forgets nothing it should keep."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import struct
import time

import pytest

from builders import cropped_query, odd_images, product_photo
from running import answer_of, lookalike, stored

pytestmark = pytest.mark.slow

LATIN1_QUERY = os.fsdecode(b"caf\xe9.jpg")
LONG_QUERY = "裙" * 78 + ".jpg"


def answers(workspace) -> dict[str, dict]:
    return {json.loads(p.read_text())["query"]: json.loads(p.read_text())
            for p in workspace.inbox.glob("*.neighbours.json")}


def test_odd_names_and_formats_in_the_inbox_are_all_answered(workspace, catalogue,
                                                             service_factory):
    shutil.rmtree(workspace.images)
    service = service_factory()
    assert "does not exist (an unmounted share?)" in service.log()
    assert not workspace.images.exists()  # waited for, never made

    workspace.images.mkdir()
    (workspace.images / os.fsdecode(b"sub\xff")).mkdir()
    workspace.add_catalogue(catalogue, 4)
    product_photo(6).save(workspace.images / os.fsdecode(b"sub\xff/caf\xe9.png"))
    service.wait_for(lambda: len(stored(workspace)) == 5, "the folder once it is there")
    assert "sub\\xff/caf\\xe9.png" in stored(workspace)

    odd = odd_images()
    for name, data in odd.items():
        (workspace.inbox / name).write_bytes(data)
    cropped_query(product_photo(2)).save(workspace.inbox / LATIN1_QUERY)
    cropped_query(product_photo(6)).save(workspace.inbox / LONG_QUERY)
    expected = {*odd, "caf\\xe9.jpg", LONG_QUERY}
    service.wait_for(lambda: set(answers(workspace)) == expected, "an answer to every query")
    got = answers(workspace)
    assert {name for name, a in got.items() if "error" in a} == {"eps.jpg", "psd-16-bit.png"}
    assert got["caf\\xe9.jpg"]["neighbours"][0]["path"] == "item02.jpg"
    assert got[LONG_QUERY]["neighbours"][0]["path"] == "sub\\xff/caf\\xe9.png"
    assert "tiff-16-bit-big-endian.tif" in got  # the file that used to stop the service
    assert service.stop() == 0
    assert "Traceback" not in service.log()


def test_renames_moves_and_a_vanished_folder(workspace, catalogue, service_factory):
    (workspace.images / "shirts").mkdir()
    for i in range(3):
        shutil.copy(catalogue / f"item{i:02d}.jpg", workspace.images / "shirts" / f"{i}.jpg")
    workspace.add_catalogue(catalogue, 6)
    service = service_factory()
    service.wait_for(lambda: len(stored(workspace)) == 9, "the catalogue")

    # A folder renamed: its rows follow, nothing is embedded again.
    os.rename(workspace.images / "shirts", workspace.images / "tops")
    service.wait_for(lambda: {f"tops/{i}.jpg" for i in range(3)} <= set(stored(workspace))
                     and not any(p.startswith("shirts/") for p in stored(workspace)),
                     "the folder's rows to follow it")
    assert "moved shirts -> tops" in service.log()
    assert not re.search(r"indexed tops/", service.log())
    # Renamed to a dot-name, it is no longer part of the catalogue.
    os.rename(workspace.images / "tops", workspace.images / ".tops")
    service.wait_for(lambda: len(stored(workspace)) == 6, "the hidden folder to be forgotten")

    # A query replaced by other content with an older mtime (mv, cp -p, rsync) is answered
    # again.
    query = workspace.inbox / "q.jpg"
    cropped_query(product_photo(1)).save(query)
    service.wait_for(lambda: answer_of(workspace, "q.jpg"), "the first answer")
    assert answer_of(workspace, "q.jpg")["neighbours"][0]["path"] == "item01.jpg"
    staged = workspace.root / "staged.jpg"
    cropped_query(product_photo(4)).save(staged)
    os.utime(staged, (1_000_000_000, 1_000_000_000))
    os.rename(staged, query)
    service.wait_for(lambda: answer_of(workspace, "q.jpg")["neighbours"][0]["path"]
                     == "item04.jpg", "the answer to the new content")

    # images_dir goes away (an unmounted share): nothing is forgotten; it is waited for.
    os.rename(workspace.images, workspace.root / "away")
    service.wait_for(lambda: "watched folder missing" in service.log(), "the missing folder")
    cropped_query(product_photo(3)).save(workspace.inbox / "while-away.jpg")
    service.wait_for(lambda: answer_of(workspace, "while-away.jpg"), "an answer meanwhile")
    assert answer_of(workspace, "while-away.jpg")["index_size"] == 6
    assert len(stored(workspace)) == 6 and not workspace.images.exists()
    os.rename(workspace.root / "away", workspace.images)
    shutil.copy(catalogue / "item09.jpg", workspace.images / "back.jpg")
    service.wait_for(lambda: "back.jpg" in stored(workspace), "the folder to be watched again")
    assert len(stored(workspace)) == 7
    assert not re.search(r"removed item0", service.log())
    assert service.stop() == 0


def test_a_start_that_would_forget_most_images_holds_back(workspace, catalogue, run_cli,
                                                          service_factory):
    workspace.add_catalogue(catalogue, 6)
    assert run_cli("index").exit_code == 0
    for path in sorted(workspace.images.glob("*.jpg"))[:5]:
        path.unlink()
    service = service_factory()
    assert "removals held back: 5 of 6 catalogue images are missing" in service.log()
    status = json.loads(lookalike(workspace, "status", "--json").stdout)
    assert "--allow-mass-removal" in status["removals_held_back"]
    assert len(stored(workspace)) == 6
    assert service.stop() == 0


def test_polling_never_enters_linked_folders(workspace, catalogue, service_factory, tmp_path):
    workspace.write_config(daemon={"settle_seconds": 0.5, "polling": True})
    outside = tmp_path / "outside"
    outside.mkdir()
    product_photo(20).save(outside / "far.jpg")
    service = service_factory()
    (workspace.images / "ext").symlink_to(outside)
    (workspace.images / "loop").symlink_to(".")
    time.sleep(0.05)
    shutil.copy(catalogue / "item01.jpg", workspace.images / "real.jpg")
    service.wait_for(lambda: "real.jpg" in stored(workspace), "polling to see the real file")
    cropped_query(product_photo(1)).save(workspace.inbox / "q.jpg")
    service.wait_for(lambda: answer_of(workspace, "q.jpg"), "a later answer")
    assert set(stored(workspace)) == {"real.jpg"}
    assert service.stop() == 0


def test_an_inotify_queue_overflow_is_detected(tmp_path, monkeypatch):
    """The kernel's overflow, injected where watchdog reads the inotify buffer (as watchdog's
    own tests do), reaches the watcher: the service then rescans."""
    from watchdog.observers.inotify_c import InotifyConstants, InotifyFD

    from lookalike.daemon.watcher import Watcher

    images, inbox = tmp_path / "images", tmp_path / "inbox"
    images.mkdir()
    inbox.mkdir()
    overflow = struct.pack("iIII", -1, InotifyConstants.IN_Q_OVERFLOW, 0, 0)
    real_read = InotifyFD._read_event_buffer
    pending = [overflow]

    def read_with_overflow(self, size):
        return pending.pop() if pending else real_read(self, size)

    watcher = Watcher(images, inbox, queue.Queue(), polling=False)
    watcher.start()
    try:
        assert not watcher.events_may_be_lost()
        monkeypatch.setattr(InotifyFD, "_read_event_buffer", read_with_overflow)
        (images / "wake.jpg").write_bytes(b"x")  # the reader thread reads the next buffer
        deadline = time.monotonic() + 10
        while not watcher.events_may_be_lost():
            assert time.monotonic() < deadline, "the overflow went unnoticed"
            time.sleep(0.05)
    finally:
        watcher.stop()
