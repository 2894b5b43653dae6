"""The SQLite store, the snapshot file and the index, on real files."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sqlite3
import threading
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import make_url

from lookalike.base.shared_lock import SharedLock
from lookalike.pipeline.builtins.exact_index import ExactIndex
from lookalike.pipeline.builtins.hnsw_index import HnswIndex
from lookalike.search.index import NeighbourIndex
from lookalike.store.snapshot import (
    SnapshotError,
    publish_snapshot,
    read_snapshot,
    snapshot_generation,
    write_snapshot,
)
from lookalike.store.store import (
    PAGE_SIZE,
    SCHEMA_VERSION,
    ImageRow,
    Store,
    StoreError,
    server_settings,
)
from lookalike.store.tables import Base


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'test.db'}")
    yield store
    store.close()


def facts(path: str, vector: list[float], sha: str = "", model: str = "m") -> ImageRow:
    data = np.asarray(vector, dtype=np.float32)
    return ImageRow(path, sha or path, 10, 1, 4, 4, model, data.tobytes())


def test_a_row_written_again_is_replaced_keeping_its_id_and_creation_time(store):
    def stored(path: str):
        with store.engine.connect() as connection:
            return connection.execute(text(
                "SELECT id, sha256, error, status, created_at, updated_at FROM images "
                "WHERE path = :path"), {"path": path}).one()

    store.write_rows([facts("a.jpg", [1, 0]), facts("b.jpg", [0, 1])])
    first = stored("a.jpg")
    store.write_rows([ImageRow("a.jpg", "other", 11, 2, error="not an image"),
                      facts("c.jpg", [1, 1])])
    again = stored("a.jpg")
    assert (again.id, again.created_at) == (first.id, first.created_at)
    assert (again.sha256, again.error, again.status) == ("other", "not an image", "failed")
    assert again.updated_at >= first.updated_at
    assert store.count_indexed("m") == 2  # b and c: a failed now


def test_database_uses_wal_so_readers_never_block_the_writer(store, tmp_path):
    store.write_rows([facts("a.jpg", [1, 0])])
    connection = sqlite3.connect(tmp_path / "test.db")
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("PRAGMA page_size").fetchone() == (PAGE_SIZE,)
    connection.close()


def test_a_model_id_is_stored_once_however_many_rows_have_it(store, tmp_path):
    store.write_rows([facts(f"{i}.jpg", [1, 0]) for i in range(3)]
                     + [facts("o.jpg", [1], model="o")])
    store.write_rows([facts("3.jpg", [0, 1])])
    connection = sqlite3.connect(tmp_path / "test.db")
    assert sorted(connection.execute("SELECT name FROM models")) == [("m",), ("o",)]
    assert connection.execute("SELECT count(DISTINCT model_id) FROM images").fetchone() == (2,)
    connection.close()
    assert store.tallies().counts == {"m": {"indexed": 4, "failed": 0},
                                      "o": {"indexed": 1, "failed": 0}}
    assert store.file_states(["3.jpg", "o.jpg"])["o.jpg"].model == "o"
    assert store.indexed_vectors("nobody's")[0] == []


def test_vectors_are_kept_per_model_and_never_mixed(store):
    store.write_rows([facts("a.jpg", [1, 0]), facts("b.jpg", [0, 1, 0], model="other")])
    paths, vectors = store.indexed_vectors("m")
    assert paths == ["a.jpg"] and vectors.shape == (1, 2)
    paths, vectors = store.indexed_vectors("other")
    assert paths == ["b.jpg"] and vectors.shape == (1, 3)


def test_vectors_committed_between_the_count_and_the_read_are_kept(store, monkeypatch):
    from sqlalchemy.orm import Session

    store.write_rows([facts("a.jpg", [1, 0]), facts("b.jpg", [0, 1])])
    scalar = Session.scalar

    def counted(rows: int) -> None:
        """The count of rows the read allocates for says ``rows``."""
        monkeypatch.setattr(Session, "scalar", lambda self, statement: (
            rows if "count" in str(statement) else scalar(self, statement)))

    # The service commits while `lookalike query` reads: the count is one behind the rows.
    counted(1)
    paths, matrix = store.indexed_vectors("m")
    assert paths == ["a.jpg", "b.jpg"]
    assert matrix.tolist() == [[1, 0], [0, 1]]
    counted(0)
    assert store.indexed_vectors("m")[1].tolist() == [[1, 0], [0, 1]]
    # A row deleted after the count, and a chunk of one row at a time.
    monkeypatch.setattr("lookalike.store.store.VECTOR_CHUNK", 1)
    counted(3)
    assert store.indexed_vectors("m")[1].tolist() == [[1, 0], [0, 1]]
    counted(1)
    paths, matrix = store.indexed_vectors("m")
    assert paths == ["a.jpg", "b.jpg"] and matrix.tolist() == [[1, 0], [0, 1]]


def test_a_path_without_a_vector_to_search_from_is_told_why(store):
    """What /similar and query --similar say for a path the index does not hold."""
    store.write_rows([facts("new.jpg", [1, 0]), facts("old.jpg", [0, 1], model="before"),
                      ImageRow("bad.jpg", "bad", 1, 1, error="not an image")])
    assert store.missing_reasons(["new.jpg", "old.jpg", "bad.jpg", "gone.jpg"], "m") == {
        "new.jpg": "indexed since the index was loaded: ask again",
        "old.jpg": "not indexed by this model yet",
        "bad.jpg": "not indexed: not an image",
        "gone.jpg": "not in the catalogue"}


def test_move_and_move_folder_keep_the_vector(store):
    store.write_rows([facts("a.jpg", [1, 0]), facts("shoes/b.jpg", [0, 1]),
                 facts("shoes/c.jpg", [1, 1])])
    assert store.move("a.jpg", "renamed.jpg")
    assert len(store.move_folder("shoes", "boots")) == 2
    paths, vectors = store.indexed_vectors("m")
    assert dict(zip(paths, vectors.tolist(), strict=True)) == {
        "boots/b.jpg": [0, 1], "boots/c.jpg": [1, 1], "renamed.jpg": [1, 0]}
    assert not store.move("missing.jpg", "x.jpg")


def test_paths_under_a_folder_exclude_lookalike_prefixes(store):
    store.write_rows([facts("tops/a.jpg", [1, 0]), facts("tops_old/b.jpg", [0, 1]),
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
    store.write_rows([facts("a.jpg", [1, 0])])
    assert store.tallies().counts == {"m": {"indexed": 1, "failed": 0}} and store.failures() == []
    writer = Store(f"sqlite:///{tmp_path / 'test.db'}")  # another process
    try:
        writer.write_rows([ImageRow("b.jpg", "b", 1, 1, error="not an image")])
    finally:
        writer.close()
    assert store.tallies().counts == {"m": {"indexed": 1, "failed": 0},
                                      "": {"indexed": 0, "failed": 1}}
    assert store.failures() == [("b.jpg", "not an image")]


def test_a_reader_behind_the_log_of_removals_compares_every_path(store, tmp_path, monkeypatch):
    from lookalike.search.follow import FollowedIndex
    from lookalike.store import store as store_module

    monkeypatch.setattr(store_module, "REMOVALS_KEPT", 2)
    store.write_rows([facts("a.jpg", unit(1, 0)), facts("b.jpg", unit(0, 1))])
    followed = FollowedIndex(store, "m", ExactIndex())
    store.write_rows([], gone=["a.jpg"])
    store.write_rows([facts("c.jpg", unit(1, 1))])
    assert store.removed_since(followed.generation) == ["a.jpg"]
    store.move("c.jpg", "d.jpg")  # three writes on: a.jpg's removal is no longer logged
    assert store.removed_since(followed.generation) is None
    assert followed.refresh() and sorted(followed.paths()) == ["b.jpg", "d.jpg"]
    assert store.removed_since(followed.generation) == []


# The tables as lookalike made them before it used Alembic (schema 1: 0.1; schema 2: with
# write generations and the removals log).
SCHEMA_1 = """
CREATE TABLE images (id INTEGER NOT NULL, path VARCHAR NOT NULL, sha256 VARCHAR(64) NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, width INTEGER, height INTEGER,
    model VARCHAR, vector BLOB, status VARCHAR(16) NOT NULL, error VARCHAR,
    created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, PRIMARY KEY (id), UNIQUE (path));
CREATE INDEX ix_images_sha256_model ON images (sha256, model);
CREATE INDEX ix_images_model ON images (model);
CREATE TABLE meta ("key" VARCHAR NOT NULL, value VARCHAR NOT NULL, PRIMARY KEY ("key"));
INSERT INTO meta VALUES ('schema_version', '1');
"""
SCHEMA_2 = SCHEMA_1.replace("model VARCHAR, vector", "model VARCHAR, generation INTEGER "
                            "DEFAULT '0' NOT NULL, vector") + """
CREATE INDEX ix_images_generation ON images (generation);
CREATE INDEX ix_images_model_status_path ON images (model, status, path);
CREATE TABLE removals (id INTEGER NOT NULL, generation INTEGER NOT NULL, path VARCHAR NOT NULL,
    PRIMARY KEY (id));
CREATE INDEX ix_removals_generation ON removals (generation);
INSERT INTO meta VALUES ('generation', '7');
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""


def schema_differences(store: Store) -> list:
    """How the store's tables differ from those the models describe (Alembic's autogenerate
    comparison); on SQLite, whose INTEGER holds 64 bits, INTEGER is as good as BIGINT."""
    with store.engine.connect() as connection:
        found = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    return [d for d in found if not (
        store.engine.dialect.name == "sqlite" and isinstance(d, list) and d[0][0] == "modify_type"
        and {str(d[0][-2]), str(d[0][-1])} == {"INTEGER", "BIGINT"})]


@pytest.mark.parametrize("schema", [SCHEMA_1, SCHEMA_2], ids=["schema-1", "schema-2"])
def test_an_older_database_is_upgraded_in_place_keeping_its_rows(tmp_path, schema):
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.executescript(schema)
    connection.execute(
        "INSERT INTO images (path, sha256, size, mtime_ns, width, height, model, vector, status,"
        " created_at, updated_at) VALUES ('a.jpg', 'ha', 10, 1, 4, 4, 'm', ?, 'indexed',"
        " '2026-01-01', '2026-01-01')", (np.asarray([1, 0], np.float32).tobytes(),))
    connection.commit()
    connection.close()
    upgraded = Store(f"sqlite:///{path}")
    try:
        assert upgraded.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert upgraded.tallies().removals == {"": 1}  # not recorded before schema 3
        assert upgraded.indexed_vectors("m")[1].tolist() == [[1, 0]]
        assert upgraded.file_states()["a.jpg"].model == "m"
        before = upgraded.generation()
        upgraded.write_rows([facts("b.jpg", [0, 1])])
        assert list(upgraded.written_since("m", before)) == ["b.jpg"]
        assert schema_differences(upgraded) == []
    finally:
        upgraded.close()
    Store(f"sqlite:///{path}").close()  # opened again: nothing left to upgrade
    assert page_size(path) == PAGE_SIZE  # rewritten from SQLite's 4 KB default


def page_size(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA page_size").fetchone()[0]
    finally:
        connection.close()


def test_an_older_file_open_elsewhere_keeps_its_pages_until_opened_alone(tmp_path):
    path = tmp_path / "old.db"
    elsewhere = sqlite3.connect(path)
    elsewhere.executescript(SCHEMA_2)
    elsewhere.execute("PRAGMA journal_mode=WAL")
    elsewhere.execute("SELECT count(*) FROM images").fetchone()  # it has the WAL open
    Store(f"sqlite:///{path}").close()  # upgraded, but not rewritten under another's feet
    assert page_size(path) == 4096
    elsewhere.close()
    store = Store(f"sqlite:///{path}")
    store.write_rows([facts("a.jpg", [1, 0])])
    store.close()
    assert page_size(path) == PAGE_SIZE
    reopened = Store(f"sqlite:///{path}")
    assert reopened.indexed_vectors("m")[0] == ["a.jpg"]
    reopened.close()


def test_a_corrupt_schema_version_is_refused(store, tmp_path):
    store.set_meta("schema_version", "three")
    store.close()
    with pytest.raises(StoreError, match="corrupt schema version"):
        Store(f"sqlite:///{tmp_path / 'test.db'}")


def test_snapshot_round_trip(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    write_snapshot(tmp_path / "v.pkl", ["a", "b", "c"], vectors, "model-x", 7)
    snapshot = read_snapshot(tmp_path / "v.pkl")
    assert snapshot["paths"] == ["a", "b", "c"] and snapshot["model"] == "model-x"
    assert np.array_equal(snapshot["vectors"], vectors)
    # no temp file left behind; the .npy needs no pickle and the .json names its rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json", "v.npy", "v.pkl"]
    assert np.array_equal(np.load(tmp_path / "v.npy", allow_pickle=False), vectors)
    assert json.loads((tmp_path / "v.json").read_text())["paths"] == ["a", "b", "c"]
    with open(tmp_path / "v.pkl", "rb") as f:
        pickled = pickle.load(f)  # for readers that trust the folder
    assert pickled["paths"] == ["a", "b", "c"] and np.array_equal(pickled["vectors"], vectors)
    pickled["vectors"] /= 2  # a writable array, as it always was
    assert snapshot_generation(tmp_path / "v.pkl", "model-x") == 7
    assert snapshot_generation(tmp_path / "v.pkl", "another model") is None
    (tmp_path / "v.pkl").unlink()
    assert snapshot_generation(tmp_path / "v.pkl", "model-x") is None


def test_a_snapshot_is_streamed_from_the_store_and_rows_changed_meanwhile_are_left_out(
        store, tmp_path, monkeypatch):
    store.write_rows([facts(f"{i}.jpg", [i, 1]) for i in range(5)])
    monkeypatch.setattr("lookalike.store.store.VECTOR_CHUNK", 2)
    path = tmp_path / "v.pkl"
    assert publish_snapshot(store, "m", path) == 5
    assert read_snapshot(path)["vectors"].tolist() == [[i, 1] for i in range(5)]
    assert snapshot_generation(path, "m") == store.generation()
    for counted, rows in [(3, 3), (7, 5)]:  # rows committed after the count, or deleted
        def chunks(model, counted=counted):
            with Store.vector_chunks(store, model) as (_, chunks):
                yield counted, chunks
        monkeypatch.setattr(store, "vector_chunks", contextmanager(chunks))
        assert publish_snapshot(store, "m", path) == rows
        written = read_snapshot(path)  # header and digest as the rows written
        assert written["paths"] == [f"{i}.jpg" for i in range(rows)]
        assert np.load(tmp_path / "v.npy").shape == (rows, 2)


class RunsCode:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['MARKER'], 'w').write('ran')",))


def test_lookalike_never_unpickles_a_snapshot(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("MARKER", str(marker))
    path = tmp_path / "feature_vectors.pkl"
    write_snapshot(path, ["a"], np.ones((1, 2), dtype=np.float32), "m", 1)
    path.write_bytes(pickle.dumps({"paths": [], "vectors": RunsCode(), "model": "x"}))
    assert read_snapshot(path)["paths"] == ["a"]
    (tmp_path / "feature_vectors.npy").unlink()
    with pytest.raises(SnapshotError, match="feature_vectors.npy is not a lookalike snapshot"):
        read_snapshot(path)
    assert not marker.exists()


def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    """The bytes of a .npy file's header declaring ``shape`` of ``descr``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def forged(tmp_path, npy: bytes, rows: int = 2, dimension: int = 2, **fields) -> Path:
    """A snapshot whose .npy holds ``npy`` and whose .json describes ``rows`` paths, with its
    sha256 right, so only the checks of the content can refuse it."""
    path = tmp_path / "feature_vectors.pkl"
    (tmp_path / "feature_vectors.npy").write_bytes(npy)
    description = {"model": "m", "generation": 1, "rows": rows, "dimension": dimension,
                   "vectors_sha256": hashlib.sha256(npy).hexdigest(),
                   "paths": [f"{i}.jpg" for i in range(rows)], "previous": None, **fields}
    (tmp_path / "feature_vectors.json").write_text(json.dumps(description))
    return path


def saved(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize(("npy", "fields", "message"), [
    (saved(np.array([[None, None], [None, None]], dtype=object)), {}, "float32"),
    (saved(np.ones((2, 2), dtype=">f4")), {}, "float32"),
    (saved(np.ones((2, 2), dtype=np.float64)), {}, "float32"),
    (saved(np.ones((3, 2), dtype=np.float32)), {}, "shape"),
    (saved(np.ones((2, 2), dtype=np.float32)), {"paths": 42}, "paths is not a list"),
    (saved(np.ones((2, 2), dtype=np.float32)), {"model": None}, "model is not a str"),
    (saved(np.ones((2, 2), dtype=np.float32)), {"vectors": "x"}, "expected the fields"),
    (saved(np.ones((2, 2), dtype=np.float32)), {"paths": ["a", 3]}, "paths must be"),
])
def test_a_forged_snapshot_is_refused(tmp_path, npy, fields, message):
    with pytest.raises(SnapshotError, match=message):
        read_snapshot(forged(tmp_path, npy, **fields))


def test_a_snapshot_header_is_checked_against_the_file_before_allocating(tmp_path):
    tracemalloc.start()
    try:
        with pytest.raises(SnapshotError, match="shape"):  # 2.4 GB declared, 2 paths
            read_snapshot(forged(tmp_path, npy_header((300_000_000, 2))))
        with pytest.raises(SnapshotError, match="size does not match its header"):
            read_snapshot(forged(tmp_path, npy_header((2, 2)) + b"\0" * 15))
        assert tracemalloc.get_traced_memory()[1] < 2**20
    finally:
        tracemalloc.stop()


def test_a_crash_between_the_two_renames_leaves_a_snapshot_that_reads(tmp_path, monkeypatch):
    """The .json goes first and also describes the .npy still in place: a writer killed
    before it renamed the new .npy leaves the old vectors readable under their own paths, and
    a snapshot that the service will write again."""
    import lookalike.base.atomic as atomic

    path = tmp_path / "feature_vectors.pkl"
    write_snapshot(path, ["a", "b"], np.eye(2, dtype=np.float32), "m", 1)
    replace = atomic.os.replace

    def killed_at_the_npy(source, destination):
        if str(destination).endswith(".npy"):
            raise KeyboardInterrupt  # as good as SIGKILL for what is on disk
        replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", killed_at_the_npy)
    with pytest.raises(KeyboardInterrupt):
        write_snapshot(path, ["c", "d", "e"], np.ones((3, 2), dtype=np.float32), "m", 2)
    monkeypatch.undo()
    assert json.loads((tmp_path / "feature_vectors.json").read_text())["paths"] == ["c", "d", "e"]
    old = read_snapshot(path)
    assert old["paths"] == ["a", "b"] and np.array_equal(old["vectors"], np.eye(2))
    assert snapshot_generation(path, "m") is None  # not whole: written again at the next start
    write_snapshot(path, ["c", "d", "e"], np.ones((3, 2), dtype=np.float32), "m", 2)
    assert read_snapshot(path)["paths"] == ["c", "d", "e"] and snapshot_generation(path, "m") == 2


def test_a_snapshot_rewritten_between_its_two_files_is_refused(tmp_path):
    path = tmp_path / "feature_vectors.pkl"
    write_snapshot(path, ["a", "b"], np.ones((2, 2), dtype=np.float32), "m", 1)
    np.save(tmp_path / "feature_vectors.npy", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(SnapshotError, match="sha256"):
        read_snapshot(path)


INDEXES = {"exact": ExactIndex, "hnsw": lambda: HnswIndex(16, 100, 256)}
# How close each index's similarities are to float32 arithmetic ("hnsw" keeps float16 vectors).
PRECISION = {"exact": 1e-5, "hnsw": 1e-3}


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
    assert [n.similarity for n in found] == pytest.approx(
        [0.96, 0.8, 0.6], abs=PRECISION[index.vector_index.id])


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


def test_an_index_gives_back_each_path_s_vector_as_it_holds_it(index):
    index.load(["a", "b"], np.stack([unit(1, 0), unit(0, 1)]))
    index.update({"a": unit(1, 1), "b": None, "c": unit(3, 4)})  # changed, gone, reusing a key
    precision = PRECISION[index.vector_index.id]
    assert index.vector("a") == pytest.approx(unit(1, 1), abs=precision)
    assert index.vector("c") == pytest.approx(unit(3, 4), abs=precision)
    assert index.vector("b") is None and index.vector("never") is None


def test_exact_index_spanning_several_blocks_matches_a_full_scan(monkeypatch):
    from lookalike.pipeline.builtins import exact_index

    monkeypatch.setattr(exact_index, "BLOCK_ROWS", 7)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = NeighbourIndex("m", ExactIndex())
    loaded = vectors[:40].copy()  # handed over: the index keeps it as its own
    index.load([f"{i}" for i in range(40)], loaded)
    blocks = index.vector_index._blocks
    assert all(np.shares_memory(block, loaded) for block in blocks[:5])  # whole ones, not copied
    assert not np.shares_memory(blocks[5], loaded)  # the last 5 rows, in a block of 7
    index.update({"3": None, "17": None, **{f"{i}": vectors[i] for i in range(40, 50)}})
    kept = [i for i in range(50) if i not in (3, 17)]
    for query in vectors[:5]:
        expected = sorted(kept, key=lambda i: -float(vectors[i] @ query))[:6]
        assert [n.path for n in index.search(query, 6)] == [f"{i}" for i in expected]
    # Queries asked together (one matrix product) get what each gets alone (to the last
    # digit or so: a product of matrices sums in another order than one of a vector).
    for together, alone in zip(index.search_many(vectors[:5], 6),
                               [index.search(query, 6) for query in vectors[:5]], strict=True):
        assert [n.path for n in together] == [n.path for n in alone]
        assert [n.similarity for n in together] == pytest.approx(
            [n.similarity for n in alone], abs=2e-6)


def test_the_int8_scan_of_the_exact_index_ranks_as_a_float32_scan(monkeypatch):
    """From the second search on, a large exact index scans an int8 copy for candidates and
    ranks them by float32: the same top k as scoring every float32 vector, through
    replacements, removals, new keys past the copy's end and a catalogue grown past twice
    the size its int8 range was fitted on."""
    from lookalike.pipeline.builtins import exact_index

    monkeypatch.setattr(exact_index, "BLOCK_ROWS", 1000)
    monkeypatch.setattr(exact_index, "COMPACT_FROM", 1000)
    rng = np.random.default_rng(2)
    centres = np.abs(rng.standard_normal((40, 64), dtype=np.float32))
    vectors = centres[rng.integers(0, 40, 9000)] + rng.random((9000, 64), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, 9000, 30)] + 0.05 * rng.random((30, 64), np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    stored = dict(enumerate(vectors[:2500]))
    index = NeighbourIndex("m", ExactIndex())
    index.load([str(i) for i in stored], vectors[:2500].copy())

    def ranks_as_float32() -> None:
        keys = np.array(list(stored))
        scores = np.stack(list(stored.values())) @ queries.T
        for column, found in zip(scores.T, index.search_many(queries, 10), strict=True):
            assert [n.path for n in found] == [str(keys[i]) for i in np.argsort(-column)[:10]]

    ranks_as_float32()  # the first search scans float32
    assert index.vector_index._codes is None
    ranks_as_float32()  # the second makes the int8 copy and scans it
    assert index.vector_index._codes.ntotal == 2500
    changes = {**{str(i): None for i in range(0, 2500, 7)},  # removed
               **{str(i): vectors[8000 + i] for i in range(1, 300, 3)},  # replaced
               **{str(i): vectors[i] for i in range(2500, 4000)}}  # new keys past the copy
    index.update(changes)
    stored = {key: vector for key, vector in {**stored, **{int(p): v for p, v in changes.items()}}
              .items() if vector is not None}
    ranks_as_float32()
    assert index.vector_index._codes.ntotal >= 3500
    index.update({str(i): vectors[i] for i in range(4000, 8000)})  # more than twice: fitted again
    stored.update({i: vectors[i] for i in range(4000, 8000)})
    ranks_as_float32()
    assert index.vector_index._coded_count == len(stored)


def test_approximate_index_finds_the_exact_neighbours_of_a_clustered_catalogue():
    rng = np.random.default_rng(0)
    centres = np.abs(rng.standard_normal((50, 64), dtype=np.float32))
    vectors = centres[rng.integers(0, 50, 5000)] + rng.random((5000, 64), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    paths = [f"{i}.jpg" for i in range(5000)]
    exact = NeighbourIndex("m", ExactIndex())
    approximate = NeighbourIndex("m", HnswIndex(16, 100, 256))
    exact.load(paths, vectors.copy())
    approximate.load(paths, vectors)
    together = approximate.search_many(vectors[:100], 10)
    assert together == [approximate.search(q, 10) for q in vectors[:100]]
    hits = [
        len({n.path for n in exact.search(q, 10)} & {n.path for n in approximate.search(q, 10)})
        for q in vectors[:100]
    ]
    assert sum(hits) / 1000 >= 0.95


@pytest.mark.parametrize("index_name", sorted(INDEXES))
def test_a_followed_index_applies_what_another_writer_changed(store, tmp_path, index_name):
    from lookalike.search.follow import FollowedIndex

    def found(vector) -> list[str]:
        return [n.path for n in followed.search(unit(*vector), k=5)]

    store.write_rows([facts("a.jpg", unit(1, 0)), facts("b.jpg", unit(0, 1))])
    writer = Store(f"sqlite:///{tmp_path / 'test.db'}")  # the service, as the UI sees it
    try:
        followed = FollowedIndex(store, "m", INDEXES[index_name]())
        assert followed.size == 2 and not followed.refresh()
        writer.write_rows([facts("b.jpg", unit(0, 1))])  # written again, unchanged
        assert followed.refresh() and followed.size == 2
        writer.write_rows([facts("c.jpg", unit(1, 0.1)), facts("a.jpg", unit(0, 1))])  # new, moved
        assert followed.refresh()
        assert found((1, 0))[0] == "c.jpg"
        assert followed.search(unit(0, 1), k=1)[0].similarity == pytest.approx(1)
        writer.move("c.jpg", "shoes/c.jpg")
        assert followed.refresh() and "c.jpg" not in found((1, 0))
        assert found((1, 0))[0] == "shoes/c.jpg"
        # One removal and one arrival leave the count as it was.
        writer.write_rows([facts("d.jpg", unit(-1, 0))], gone=["b.jpg"])
        assert followed.refresh()
        assert sorted(followed.paths()) == ["a.jpg", "d.jpg", "shoes/c.jpg"]
        writer.write_rows([ImageRow("a.jpg", "x", 1, 1, error="not an image")])  # now unreadable
        assert followed.refresh() and sorted(followed.paths()) == ["d.jpg", "shoes/c.jpg"]
        writer.write_rows([facts("x.jpg", unit(0, 1))])
        assert followed.refresh()
        assert not writer.move("never-stored.jpg", "x.jpg")  # nothing known moved: no change
        assert not followed.refresh()
        assert writer.move("x.jpg", "d.jpg")  # over d.jpg: its old vector goes, x's takes its place
        assert followed.refresh() and sorted(followed.paths()) == ["d.jpg", "shoes/c.jpg"]
        assert found((0, 1))[0] == "d.jpg"
        writer.move_folder("shoes", "bags")
        assert followed.refresh() and sorted(followed.paths()) == ["bags/c.jpg", "d.jpg"]
        writer.write_rows([facts("e.jpg", unit(1, 1), model="other")])  # another model's vector
        followed.refresh()
        assert sorted(followed.paths()) == ["bags/c.jpg", "d.jpg"]
        assert not followed.refresh()
    finally:
        writer.close()


def test_searches_share_the_index_lock_and_a_refresh_waits_for_them():
    lock = SharedLock()
    both_inside = threading.Barrier(2, timeout=10)  # broken unless two readers hold it at once

    def read():
        with lock.reading():
            both_inside.wait()

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert not both_inside.broken
    written = threading.Event()

    def write():
        with lock.writing():
            written.set()

    with lock.reading():
        writer = threading.Thread(target=write)
        writer.start()
        assert not written.wait(0.3)  # a refresh waits for the search inside
    assert written.wait(10)
    writer.join()



def test_searches_asked_at_once_are_answered_by_one_batched_search():
    from lookalike.search.gathered import GatheredSearches

    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = NeighbourIndex("m", ExactIndex())
    index.load([f"{i}.jpg" for i in range(50)], vectors)
    batches, first_running, go_on = [], threading.Event(), threading.Event()

    def search(queries, k):
        batches.append(len(queries))
        if len(batches) == 1:  # the first search holds on while the others arrive
            first_running.set()
            assert go_on.wait(10)
        return index.search_many(queries, k)

    gathered = GatheredSearches(search)
    wanted = {i: 3 if i == 0 else 1 + i % 5 for i in range(9)}  # each request its own k
    answers = {}
    threads = [threading.Thread(target=lambda i=i: answers.update(
        {i: gathered(vectors[i:i + 1], wanted[i])[0]})) for i in range(9)]
    threads[0].start()
    assert first_running.wait(10)
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 10
    while len(gathered._waiting) < 8 and time.monotonic() < deadline:  # all eight queued
        time.sleep(0.01)
    go_on.set()
    for thread in threads:
        thread.join()
    assert batches == [1, 8]  # the first alone at once; the eight that came meanwhile together
    assert answers == {i: index.search(vectors[i], k) for i, k in wanted.items()}

    def failing(queries, k):
        raise ValueError("the index is broken")

    broken = GatheredSearches(failing)
    for _ in range(2):  # each caller gets the error, and the next search is not left waiting
        with pytest.raises(ValueError, match="the index is broken"):
            broken(vectors[:1], 1)


def test_a_database_urls_own_libpq_parameters_are_kept_beside_the_timeouts():
    url = make_url("postgresql+psycopg://shop@db/catalogue"
                   "?options=-c%20search_path%3Dshop&connect_timeout=3")
    settings = server_settings(url, 15)
    # The URL's options first, lookalike's timeouts after them (the later setting wins).
    assert settings["options"].startswith("-c search_path=shop -c lock_timeout=15000 ")
    assert "connect_timeout" not in settings  # the URL's own 3 s is left to it
    assert server_settings(make_url("postgresql+psycopg://db/c"), 15)["connect_timeout"] == 10
