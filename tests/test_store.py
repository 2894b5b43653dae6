"""The SQLite store, the snapshot file and the index, on real files."""

from __future__ import annotations

import pickle
import sqlite3

import numpy as np
import pytest

from lookalike.store.index import NeighbourIndex
from lookalike.store.snapshot import SnapshotError, read_snapshot, write_snapshot
from lookalike.store.store import ImageFacts, Store, StoreError


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'test.db'}")
    yield store
    store.close()


def facts(path: str, vector: list[float], sha: str = "", model: str = "m") -> ImageFacts:
    data = np.asarray(vector, dtype=np.float32)
    return ImageFacts(path, sha or path, 10, 1, 4, 4, model, data.tobytes())


def test_database_uses_wal_so_readers_never_block_the_writer(store, tmp_path):
    store.apply([facts("a.jpg", [1, 0])])
    connection = sqlite3.connect(tmp_path / "test.db")
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


def test_vectors_are_kept_per_model_and_never_mixed(store):
    store.apply([facts("a.jpg", [1, 0]), facts("b.jpg", [0, 1, 0], model="other")])
    paths, vectors = store.vectors("m")
    assert paths == ["a.jpg"] and vectors.shape == (1, 2)
    paths, vectors = store.vectors("other")
    assert paths == ["b.jpg"] and vectors.shape == (1, 3)


def test_move_and_move_folder_keep_the_vector(store):
    store.apply([facts("a.jpg", [1, 0]), facts("shoes/b.jpg", [0, 1]),
                 facts("shoes/c.jpg", [1, 1])])
    assert store.move("a.jpg", "renamed.jpg")
    assert store.move_folder("shoes", "boots") == 2
    paths, vectors = store.vectors("m")
    assert paths == ["boots/b.jpg", "boots/c.jpg", "renamed.jpg"]
    assert vectors[2].tolist() == [1, 0]
    assert not store.move("missing.jpg", "x.jpg")


def test_paths_under_a_folder_exclude_lookalike_prefixes(store):
    store.apply([facts("tops/a.jpg", [1, 0]), facts("tops_old/b.jpg", [0, 1]),
                 facts("tops%/c.jpg", [1, 1])])
    assert store.paths_under("tops") == ["tops/a.jpg"]
    assert store.paths_under("tops%") == ["tops%/c.jpg"]


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="cannot open database"):
        Store(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_another_applications_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE customers (name TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match="was not made by lookalike"):
        Store(f"sqlite:///{path}")


def test_a_database_from_a_newer_lookalike_is_refused(store, tmp_path):
    store.set_meta("schema_version", "99")
    store.close()
    with pytest.raises(StoreError, match="schema 99, newer than"):
        Store(f"sqlite:///{tmp_path / 'test.db'}")


def test_snapshot_round_trip(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    write_snapshot(tmp_path / "v.pkl", ["a", "b", "c"], vectors, "model-x")
    snapshot = read_snapshot(tmp_path / "v.pkl")
    assert snapshot["paths"] == ["a", "b", "c"] and snapshot["model"] == "model-x"
    assert np.array_equal(snapshot["vectors"], vectors)
    assert [p.name for p in tmp_path.iterdir()] == ["v.pkl"]  # no temp file left behind


class RunsCode:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['MARKER'], 'w').write('ran')",))


def test_a_crafted_snapshot_is_refused_and_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("MARKER", str(marker))
    path = tmp_path / "feature_vectors.pkl"
    path.write_bytes(pickle.dumps({"paths": [], "vectors": RunsCode(), "model": "x"}))
    with pytest.raises(SnapshotError, match="refusing to load builtins.exec"):
        read_snapshot(path)
    assert not marker.exists()


def test_index_ranks_by_cosine_similarity():
    vectors = np.array([[1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    index = NeighbourIndex(["a", "b", "c"], vectors, "m")
    found = index.search(np.array([0.8, 0.6], dtype=np.float32), k=5)
    assert [n.path for n in found] == ["b", "a", "c"]
    assert [n.similarity for n in found] == pytest.approx([0.96, 0.8, 0.6])
