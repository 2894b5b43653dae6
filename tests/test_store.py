"""The SQLite store, the snapshot file and the index, on real files."""

from __future__ import annotations

import pickle
import sqlite3

import numpy as np
import pytest

from lookalike.pipeline.builtins.exact_index import ExactIndex
from lookalike.pipeline.builtins.hnsw_index import HnswIndex
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


def test_vectors_committed_between_the_count_and_the_read_are_kept(store, monkeypatch):
    from sqlalchemy.orm import Session

    store.apply([facts("a.jpg", [1, 0]), facts("b.jpg", [0, 1])])
    # The service commits while `lookalike query` reads: the count is one behind the rows.
    monkeypatch.setattr(Session, "scalar", lambda self, statement: 1)
    paths, matrix = store.vectors("m")
    assert paths == ["a.jpg", "b.jpg"]
    assert matrix.tolist() == [[1, 0], [0, 1]]
    monkeypatch.setattr(Session, "scalar", lambda self, statement: 0)
    assert store.vectors("m")[1].tolist() == [[1, 0], [0, 1]]


def test_move_and_move_folder_keep_the_vector(store):
    store.apply([facts("a.jpg", [1, 0]), facts("shoes/b.jpg", [0, 1]),
                 facts("shoes/c.jpg", [1, 1])])
    assert store.move("a.jpg", "renamed.jpg")
    assert len(store.move_folder("shoes", "boots")) == 2
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


def test_counts_and_failures_are_kept_only_until_the_next_write(store, tmp_path):
    store.apply([facts("a.jpg", [1, 0])])
    assert store.counts() == {"m": {"indexed": 1, "failed": 0}} and store.failures() == []
    writer = Store(f"sqlite:///{tmp_path / 'test.db'}")  # another process
    try:
        writer.apply([ImageFacts("b.jpg", "b", 1, 1, error="not an image")])
    finally:
        writer.close()
    assert store.counts() == {"m": {"indexed": 1, "failed": 0}, "": {"indexed": 0, "failed": 1}}
    assert store.failures() == [("b.jpg", "not an image")]


def test_a_reader_behind_the_log_of_removals_compares_every_path(store, tmp_path, monkeypatch):
    from lookalike.store import store as store_module
    from lookalike.store.follow import FollowedIndex

    monkeypatch.setattr(store_module, "REMOVALS_KEPT", 2)
    store.apply([facts("a.jpg", unit(1, 0)), facts("b.jpg", unit(0, 1))])
    followed = FollowedIndex(store, "m", ExactIndex())
    store.apply([], gone=["a.jpg"])
    store.apply([facts("c.jpg", unit(1, 1))])
    assert store.removed_since(followed.generation) == ["a.jpg"]
    store.move("c.jpg", "d.jpg")  # three writes on: a.jpg's removal is no longer logged
    assert store.removed_since(followed.generation) is None
    assert followed.refresh() and sorted(followed.index.paths()) == ["b.jpg", "d.jpg"]
    assert store.removed_since(followed.generation) == []


def test_a_schema_1_database_is_upgraded_in_place_keeping_its_rows(store, tmp_path):
    store.apply([facts("a.jpg", [1, 0])])
    store.close()
    connection = sqlite3.connect(tmp_path / "test.db")  # as lookalike 0.1 left it
    connection.executescript("""
        DROP INDEX ix_images_generation; DROP INDEX ix_images_model_status_path;
        ALTER TABLE images DROP COLUMN generation;
        UPDATE meta SET value = '1' WHERE key = 'schema_version';""")
    connection.close()
    upgraded = Store(f"sqlite:///{tmp_path / 'test.db'}")
    try:
        assert upgraded.get_meta("schema_version") == "2"
        assert upgraded.vectors("m")[1].tolist() == [[1, 0]]
        upgraded.apply([facts("b.jpg", [0, 1])])
        assert list(upgraded.written_since("m", 0)) == ["b.jpg"]
    finally:
        upgraded.close()
    connection = sqlite3.connect(tmp_path / "test.db")
    indexes = {name for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'")}
    connection.close()
    assert {"ix_images_generation", "ix_images_model_status_path"} <= indexes


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


INDEXES = {"exact": ExactIndex, "hnsw": lambda: HnswIndex(16, 100, 256)}


@pytest.fixture(params=sorted(INDEXES))
def index(request):
    return NeighbourIndex("m", INDEXES[request.param]())


def unit(*values):
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_index_ranks_by_cosine_similarity(index):
    index.load(["a", "b", "c"], np.stack([unit(1, 0), unit(0.6, 0.8), unit(0, 1)]))
    found = index.search(unit(0.8, 0.6), k=5)
    assert [n.path for n in found] == ["b", "a", "c"]
    assert [n.similarity for n in found] == pytest.approx([0.96, 0.8, 0.6], abs=1e-5)


def test_index_updates_one_path_at_a_time(index):
    assert index.search(unit(1, 0), k=3) == []
    index.update({"a": unit(1, 0), "b": unit(0, 1)})
    index.update({"a": unit(0, 1)})  # a's image changed
    assert {n.path for n in index.search(unit(0, 1), k=2)} == {"a", "b"}
    index.update({"b": None, "c": unit(1, 0.1)})  # b deleted, c arrives (and reuses b's key)
    assert index.size == 2
    assert [n.path for n in index.search(unit(1, 0), k=5)] == ["c", "a"]
    index.update({"a": None, "c": None, "never-stored": None})
    assert index.size == 0 and index.search(unit(1, 0), k=5) == []


def test_replacing_a_vector_after_a_delete_leaves_no_trace_of_the_old_one(index):
    index.load(["a", "b", "c"], np.stack([unit(1, 0), unit(0, 1), unit(1, 1)]))
    index.update({"c": None})  # a free slot, then a stored path changes
    index.update({"a": unit(-1, 0)})
    assert [n.path for n in index.search(unit(1, 0), k=5)] == ["b", "a"]
    index.update({"d": unit(1, 0.2), "b": None})  # a new path reuses c's key
    index.update({"b": unit(0, 1)})
    assert [n.path for n in index.search(unit(1, 0), k=5)] == ["d", "b", "a"]


def test_exact_index_spanning_several_blocks_matches_a_full_scan(monkeypatch):
    from lookalike.pipeline.builtins import exact_index

    monkeypatch.setattr(exact_index, "BLOCK_ROWS", 7)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = NeighbourIndex("m", ExactIndex())
    index.load([f"{i}" for i in range(40)], vectors[:40])
    index.update({"3": None, "17": None, **{f"{i}": vectors[i] for i in range(40, 50)}})
    kept = [i for i in range(50) if i not in (3, 17)]
    for query in vectors[:5]:
        expected = sorted(kept, key=lambda i: -float(vectors[i] @ query))[:6]
        assert [n.path for n in index.search(query, 6)] == [f"{i}" for i in expected]


def test_approximate_index_finds_the_exact_neighbours_of_a_clustered_catalogue():
    rng = np.random.default_rng(0)
    centres = np.abs(rng.standard_normal((50, 64), dtype=np.float32))
    vectors = centres[rng.integers(0, 50, 5000)] + rng.random((5000, 64), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    paths = [f"{i}.jpg" for i in range(5000)]
    exact = NeighbourIndex("m", ExactIndex())
    approximate = NeighbourIndex("m", HnswIndex(16, 100, 256))
    exact.load(paths, vectors)
    approximate.load(paths, vectors)
    hits = [
        len({n.path for n in exact.search(q, 10)} & {n.path for n in approximate.search(q, 10)})
        for q in vectors[:100]
    ]
    assert sum(hits) / 1000 >= 0.95


@pytest.mark.parametrize("index_name", sorted(INDEXES))
def test_a_followed_index_applies_what_another_writer_changed(store, tmp_path, index_name):
    from lookalike.store.follow import FollowedIndex

    def found(vector) -> list[str]:
        return [n.path for n in followed.index.search(unit(*vector), k=5)]

    store.apply([facts("a.jpg", unit(1, 0)), facts("b.jpg", unit(0, 1))])
    writer = Store(f"sqlite:///{tmp_path / 'test.db'}")  # the service, as the UI sees it
    try:
        followed = FollowedIndex(store, "m", INDEXES[index_name]())
        assert followed.index.size == 2 and not followed.refresh()
        writer.apply([facts("b.jpg", unit(0, 1))])  # written again, unchanged
        assert followed.refresh() and followed.index.size == 2
        writer.apply([facts("c.jpg", unit(1, 0.1)), facts("a.jpg", unit(0, 1))])  # new, changed
        assert followed.refresh()
        assert found((1, 0))[0] == "c.jpg"
        assert followed.index.search(unit(0, 1), k=1)[0].similarity == pytest.approx(1)
        writer.move("c.jpg", "shoes/c.jpg")
        assert followed.refresh() and "c.jpg" not in found((1, 0))
        assert found((1, 0))[0] == "shoes/c.jpg"
        # One removal and one arrival leave the count as it was.
        writer.apply([facts("d.jpg", unit(-1, 0))], gone=["b.jpg"])
        assert followed.refresh()
        assert sorted(followed.index.paths()) == ["a.jpg", "d.jpg", "shoes/c.jpg"]
        writer.apply([ImageFacts("a.jpg", "x", 1, 1, error="not an image")])  # now unreadable
        assert followed.refresh() and sorted(followed.index.paths()) == ["d.jpg", "shoes/c.jpg"]
        writer.apply([facts("x.jpg", unit(0, 1))])
        assert followed.refresh()
        writer.move("never-stored.jpg", "x.jpg")  # x.jpg's row goes, nothing takes its place
        assert followed.refresh() and "x.jpg" not in followed.index.paths()
        writer.move_folder("shoes", "bags")
        assert followed.refresh() and sorted(followed.index.paths()) == ["bags/c.jpg", "d.jpg"]
        writer.apply([facts("e.jpg", unit(1, 1), model="other")])  # another model's vector
        followed.refresh()
        assert sorted(followed.index.paths()) == ["bags/c.jpg", "d.jpg"]
        assert not followed.refresh()
    finally:
        writer.close()
