"""Faults: crashes, full disks, files replaced mid-embedding, corrupt databases."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import cropped_query, product_photo
from lookalike.base.atomic import write_atomically
from lookalike.store.snapshot import SnapshotError, read_snapshot
from lookalike.store.store import Store
from running import RunningService, answer_of, lookalike, sha256, stored


def test_an_interrupted_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "feature_vectors.pkl"
    target.write_bytes(b"previous")

    def disk_full(fd):  # injected: the kernel's answer when the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, b"new content" * 1000)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["feature_vectors.pkl"]


def test_a_file_replaced_while_embedded_keeps_no_stale_vector(workspace, catalogue):
    from lookalike.api.app import App
    from lookalike.daemon.ingest import ingest
    from lookalike.store.nodes import joined

    app = App(str(workspace.config))
    store = Store(app.config.catalogue.database)
    pipeline = app.pipeline
    target = workspace.images / "a.jpg"
    shutil.copy(catalogue / "item01.jpg", target)
    real_embed = pipeline.embed

    def embed_while_replaced(images):
        vectors = real_embed(images)
        replacement = workspace.images / ".a.tmp"
        shutil.copy(catalogue / "item02.jpg", replacement)
        os.replace(replacement, target)  # a sync tool swaps the file mid-embedding
        return vectors

    try:
        pipeline.embed = embed_while_replaced
        with joined(store, "index", pipeline.model_id) as node:
            report = ingest(store, pipeline, workspace.images, node, ["a.jpg"], batch_size=4)
            assert report.busy == ["a.jpg"] and "a.jpg" not in store.file_states(["a.jpg"])
            pipeline.embed = real_embed
            ingest(store, pipeline, workspace.images, node, ["a.jpg"], batch_size=4)
        paths, vectors = store.indexed_vectors(pipeline.model_id)
        expected = real_embed([pipeline.prepare(target.read_bytes()).square])
        assert paths == ["a.jpg"] and np.allclose(vectors[0], expected[0], atol=1e-5)
        assert sha256(target) in store.indexed_rows([sha256(target)], pipeline.model_id)
    finally:
        store.close()


def test_a_corrupt_database_stops_start_up_and_is_left_alone(workspace):
    database = workspace.root / "lookalike.db"
    database.write_bytes(os.urandom(8192))
    before = database.read_bytes()
    result = lookalike(workspace, "run")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot open database" in result.stderr
    assert database.read_bytes() == before


def catalogue_variant(source: Path, index: int, target: Path) -> None:
    """A distinct file: the catalogue photo with one pixel changed."""
    image = Image.open(source).convert("RGB")
    image.putpixel((index % image.width, index // image.width), (index % 251, 7, 99))
    image.save(target, quality=90)


ATTEMPTS = 6  # kills at random moments (bench/ has no longer soak: the moments matter)


@pytest.mark.slow
def snapshot_size(snapshot) -> int | None:
    """How many paths the snapshot holds; None while the service is rewriting it (its .npy
    renamed, its .json not yet: a reader reads again, as the refusal says)."""
    try:
        return len(read_snapshot(snapshot)["paths"])
    except SnapshotError:
        return None


def test_kill_9_at_random_moments_loses_and_doubles_nothing(workspace, catalogue):
    rng = random.Random(1234)
    sources = sorted(catalogue.iterdir())
    total, before_start = 120, 90
    for i in range(before_start):
        catalogue_variant(sources[i % len(sources)], i, workspace.images / f"p{i:03d}.jpg")
    for name in ("q1.jpg", "q2.jpg"):
        cropped_query(product_photo(int(name[1]))).save(workspace.inbox / name)
    snapshot = workspace.root / "feature_vectors.pkl"
    service_log = workspace.root / "service.log"
    added = before_start
    for attempt in range(ATTEMPTS):
        log_start = len(service_log.read_text()) if service_log.exists() else 0
        service = RunningService(workspace, wait=False)
        # Once its models are loaded it reconciles, embeds, refreshes and answers: die then.
        service.wait_for(lambda s=service, start=log_start: "running with model" in s.log()[start:],
                         "the models")
        time.sleep(rng.uniform(0.0, 3.0))  # past the models: start-up, ingest, answers
        for _ in range(5):  # more arrive while it runs
            if added < total:
                catalogue_variant(sources[added % len(sources)], added,
                                  workspace.images / f"p{added:03d}.jpg")
                added += 1
        service.process.send_signal(signal.SIGKILL)
        service.kill()
        # Whatever moment it died at, readers never see half a file.
        if snapshot.exists():
            try:
                read_snapshot(snapshot)
            except SnapshotError as exc:
                pytest.fail(f"attempt {attempt}: half-written snapshot: {exc}")
        for answer in workspace.inbox.glob("*.neighbours.json"):
            json.loads(answer.read_text())
    while added < total:
        catalogue_variant(sources[added % len(sources)], added,
                          workspace.images / f"p{added:03d}.jpg")
        added += 1

    service = RunningService(workspace)
    service.wait_for(lambda: len(stored(workspace)) == total
                     and all(s == "indexed" for s, _ in stored(workspace).values()),
                     "every image indexed", timeout=300)
    assert service.log().count("running with model") == ATTEMPTS + 1
    rows = stored(workspace)
    for path, (_, digest) in rows.items():
        assert digest == sha256(workspace.images / path), path
    service.wait_for(lambda: snapshot_size(snapshot) == total, "the snapshot")
    assert sorted(read_snapshot(snapshot)["paths"]) == sorted(rows)
    service.wait_for(lambda: answer_of(workspace, "q2.jpg"), "the queries")
    # The nodes killed left their rows; the lock the next one took proved them dead.
    status = json.loads(lookalike(workspace, "status", "--json").stdout)
    assert [node["pid"] for node in status["nodes"]] == [service.process.pid]
    assert service.stop() == 0

    connection = sqlite3.connect(workspace.root / "lookalike.db")
    assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert connection.execute("SELECT count(*), count(DISTINCT path) FROM images").fetchone() == (
        total, total)
    connection.close()
    status = json.loads(lookalike(workspace, "status", "--json").stdout)
    assert status["indexed"] == total and status["index_size"] == total


def test_a_step_that_trips_over_one_image_fails_that_image_only(workspace, catalogue):
    from lookalike.api.app import App
    from lookalike.daemon.ingest import ingest
    from lookalike.store.nodes import joined

    app = App(str(workspace.config))
    store = Store(app.config.catalogue.database)
    pipeline = app.pipeline
    workspace.add_catalogue(catalogue, 3)
    Image.new("RGB", (7, 7), "red").save(workspace.images / "tiny.png")
    real_remove = pipeline.remover.remove

    def remove_that_breaks_on_tiny_images(image):  # injected: a plugin's bug
        if image.width < 10:
            raise ValueError("mask has no pixels")
        return real_remove(image)

    pipeline.remover.remove = remove_that_breaks_on_tiny_images
    try:
        paths = ["item00.jpg", "item01.jpg", "item02.jpg", "tiny.png"]
        with joined(store, "index", pipeline.model_id) as node:
            report = ingest(store, pipeline, workspace.images, node, paths, batch_size=8)
        assert (report.embedded, report.failed) == (3, 1)
        assert store.failures() == [("tiny.png", "ValueError: mask has no pixels")]
    finally:
        store.close()
