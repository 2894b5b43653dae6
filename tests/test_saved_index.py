"""The saved "hnsw" graph: restored at start and brought up to date, or rebuilt from the store
whenever it cannot be trusted. Real SQLite stores, real usearch graphs on disk."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.base.forked import in_child
from lookalike.pipeline.builtins.exact_index import ExactIndex
from lookalike.pipeline.builtins.hnsw_index import HnswIndex
from lookalike.search.follow import FollowedIndex
from lookalike.search.saved import saved_paths
from lookalike.store.store import ROOT_KEY, ImageRow, Store


def unit_rows(paths: list[str], seed: int) -> list[ImageRow]:
    vectors = np.abs(np.random.default_rng(seed).standard_normal((len(paths), 8)))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return [ImageRow(path, path, 1, 1, 1, 1, "m", vector.tobytes())
            for path, vector in zip(paths, vectors, strict=True)]


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'catalogue.db'}")
    store.meta_once(ROOT_KEY, "catalogue-1")
    store.write_rows(unit_rows([f"{n:03d}.jpg" for n in range(60)], seed=0))
    yield store
    store.close()


@pytest.fixture
def snapshot(tmp_path):
    return tmp_path / "feature_vectors.pkl"


def graph() -> HnswIndex:
    return HnswIndex(16, 64, 64)


def holds_the_store(index: FollowedIndex, store: Store) -> bool:
    """``index`` holds each indexed path of the store with its vector, and finds it from it."""
    paths, vectors = store.indexed_vectors("m")
    return sorted(index.paths()) == sorted(paths) and all(
        np.allclose(index.vector(path), vector, atol=1e-3)
        and index.search(vector, 1)[0].path == path
        for path, vector in zip(paths, vectors, strict=True))


def test_a_saved_graph_is_restored_and_brought_up_to_date(store, snapshot):
    saved = FollowedIndex(store, "m", graph(), snapshot)
    assert not saved.restored and saved.save(snapshot)
    assert not saved.save(snapshot)  # unchanged since: not written again
    store.write_rows(unit_rows(["new.jpg", "001.jpg"], seed=1), gone=["002.jpg", "003.jpg"])
    store.move("004.jpg", "moved.jpg")
    restored = FollowedIndex(store, "m", graph(), snapshot)
    assert restored.restored and restored.generation == store.generation()
    assert restored.size == 59 and "moved.jpg" in restored.paths()
    assert holds_the_store(restored, store)


def test_keys_freed_before_the_save_are_reused_after_the_restore(store, snapshot):
    saved = FollowedIndex(store, "m", graph(), snapshot)
    store.write_rows([], gone=["010.jpg", "020.jpg"])
    saved.refresh()
    saved.save(snapshot)
    restored = FollowedIndex(store, "m", graph(), snapshot)
    store.write_rows(unit_rows(["a.jpg", "b.jpg", "c.jpg"], seed=2))
    restored.refresh()
    assert restored.size == 61 and holds_the_store(restored, store)


def test_an_exact_index_is_not_saved(store, snapshot):
    assert not FollowedIndex(store, "m", ExactIndex(), snapshot).save(snapshot)
    assert not any(path.exists() for path in saved_paths(snapshot, "exact"))


def damage_the_graph(store, snapshot):
    data, _ = saved_paths(snapshot, "hnsw")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))


def cut_the_graph_short(store, snapshot):
    data, _ = saved_paths(snapshot, "hnsw")
    data.write_bytes(data.read_bytes()[:1000])


def garble_the_description(store, snapshot):
    saved_paths(snapshot, "hnsw")[1].write_text('{"format": 1, "catal')


def describe_another_model(store, snapshot):
    description = saved_paths(snapshot, "hnsw")[1]
    described = json.loads(description.read_text())
    description.write_text(json.dumps({**described, "model": "other"}))


def replace_the_database(store, snapshot):
    store.set_meta(ROOT_KEY, "catalogue-2")


def restore_an_older_database(store, snapshot):
    store.set_meta("generation", "0")


def fall_behind_the_removals_log(store, snapshot):
    store.set_meta("removals_from", str(store.generation() + 5))


@pytest.mark.parametrize("spoil", [
    damage_the_graph, cut_the_graph_short, garble_the_description, describe_another_model,
    replace_the_database, restore_an_older_database, fall_behind_the_removals_log])
def test_a_saved_graph_that_cannot_be_trusted_is_rebuilt(store, snapshot, caplog, spoil):
    FollowedIndex(store, "m", graph(), snapshot).save(snapshot)
    spoil(store, snapshot)
    with caplog.at_level(logging.WARNING):
        index = FollowedIndex(store, "m", graph(), snapshot)
    assert not index.restored and index.size == 60
    assert "the index is built again" in caplog.text
    assert holds_the_store(index, store)


def test_a_graph_saved_with_other_settings_is_rebuilt(store, snapshot, caplog):
    FollowedIndex(store, "m", graph(), snapshot).save(snapshot)
    with caplog.at_level(logging.WARNING):
        index = FollowedIndex(store, "m", HnswIndex(32, 64, 64), snapshot)
    assert not index.restored and "built with connectivity 16, not 32" in caplog.text


def test_a_save_interrupted_before_its_description_leaves_the_old_one_unused(store, snapshot):
    """kill -9 between the graph file and its description: the description names another
    file (its size and checksum), so the pair is never mixed."""
    FollowedIndex(store, "m", graph(), snapshot).save(snapshot)
    data, description = saved_paths(snapshot, "hnsw")
    old_description = description.read_bytes()
    store.write_rows(unit_rows(["new.jpg"], seed=3))
    FollowedIndex(store, "m", graph(), snapshot).save(snapshot)
    description.write_bytes(old_description)
    index = FollowedIndex(store, "m", graph(), snapshot)
    assert not index.restored and index.size == 61


def test_torch_exports_its_model_after_the_graph_library_is_loaded(tmp_path):
    """usearch's Linux wheel links its own C++ runtime; loaded before torch, it made torch's
    ONNX export spin forever (`lookalike query` with the hnsw index, before the
    export was cached). A fresh interpreter, as the CLI has."""
    script = """
import io
import numpy as np
from lookalike.pipeline.builtins.hnsw_index import HnswIndex
HnswIndex(16, 64, 64).add(np.arange(4), np.eye(4, 8, dtype=np.float32))
import torch
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
torch.onnx.export(net, torch.zeros(1, 3, 8, 8), io.BytesIO(), dynamo=False)
print("exported")
"""
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "exported", done.stderr


def test_the_graph_is_written_by_a_forked_child(store, snapshot, tmp_path, monkeypatch):
    """usearch holds the GIL while it writes (seconds at a million): the service's other
    threads go on while a child writes from its copy of the memory. Without fork() (Windows),
    the graph is written in the process itself."""
    def writer_pid(path) -> int:
        in_child(lambda: path.write_text(str(os.getpid())))
        return int(path.read_text())

    assert writer_pid(tmp_path / "forked") != os.getpid()
    monkeypatch.delattr(os, "fork")
    assert writer_pid(tmp_path / "here") == os.getpid()


def test_a_graph_the_child_cannot_write_is_an_oserror_and_the_old_save_stays(
        store, snapshot, monkeypatch):
    """The service logs the OSError and tries again at its next save; the previous pair is
    still restored, and the child's half-written file is gone."""
    index = FollowedIndex(store, "m", graph(), snapshot)
    index.save(snapshot)
    from usearch.index import Index  # loaded by the graph above, after the C++ runtime

    with pytest.raises(OSError, match="ZeroDivisionError: division by zero"):
        in_child(lambda: 1 / 0)
    store.write_rows(unit_rows(["new.jpg"], seed=4))
    index.refresh()

    def disk_full(graph, path, progress=None):
        Path(path).write_bytes(b"half a graph")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(Index, "save", disk_full)  # the child is a copy: it fails the same way
    with pytest.raises(OSError, match="RuntimeError"):
        index.save(snapshot)
    monkeypatch.undo()
    assert sorted(p.name for p in snapshot.parent.iterdir() if ".hnsw" in p.name) == [
        "feature_vectors.hnsw", "feature_vectors.hnsw.json"]
    restored = FollowedIndex(store, "m", graph(), snapshot)
    assert restored.restored and restored.size == 61
