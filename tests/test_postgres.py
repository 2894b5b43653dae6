"""The store and the commands on a real PostgreSQL 15 (one server for the module, a database
per test): the same rows, generations, removals and refusals as on SQLite."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from postgres import free_port
from sqlalchemy import create_engine, text
from test_schema import older_schema
from test_store import schema_differences

from builders import cropped_query, product_photo
from lookalike.store import store as store_module
from lookalike.store.store import SCHEMA_VERSION, ImageRow, Store, StoreError


def row(path: str, vector: list[float], sha: str, removal: str | None = None) -> ImageRow:
    return ImageRow(path, sha, 10, 1, 4, 4, "m", np.asarray(vector, np.float32).tobytes(),
                    removal=removal)


def test_rows_generations_and_removals_as_on_sqlite(database):
    store = Store(database)
    try:
        store.write_rows([row("a.jpg", [1, 0], "ha", "plain@1"), row("b.jpg", [0, 1], "hb")])
        assert store.generation() == 1
        store.write_rows([row("c.jpg", [1, 1], "hc")], gone=["a.jpg"])
        assert store.generation() == 2
        assert list(store.written_since("m", 1)) == ["c.jpg"]
        paths, vectors = store.indexed_vectors("m")
        assert paths == ["b.jpg", "c.jpg"] and vectors.tolist() == [[0, 1], [1, 1]]
        assert store.tallies().counts == {"m": {"indexed": 2, "failed": 0}}
        assert store.indexed_rows({"hb"}, "m")["hb"].path == "b.jpg"
    finally:
        store.close()
    reopened = Store(database)
    try:
        assert reopened.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert reopened.generation() == 2
        assert schema_differences(reopened) == []  # Alembic made what the models describe
    finally:
        reopened.close()


def test_vectors_are_kept_in_their_rows_also_those_an_upgrade_finds(database):
    """Out of line (TOAST) each vector is read by an index lookup: a million loaded in 21 s
    against 9 s for the column's plain scan."""
    older_schema(database, "0008")  # as the previous lookalike made it, vectors out of line
    vectors = np.random.default_rng(0).normal(size=(4, 512)).astype(np.float32)  # no pglz
    engine = create_engine(database)
    out_of_line = text("SELECT pg_relation_size(reltoastrelid) FROM pg_class "
                       "WHERE relname = 'images'")
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO models (name) VALUES ('m')"))
            for number, vector in enumerate(vectors[:3]):
                connection.execute(text(
                    "INSERT INTO images (path, sha256, size, mtime_ns, model_id, generation, "
                    "vector, status, created_at, updated_at) VALUES (:path, :path, 1, 1, 1, 0, "
                    ":vector, 'indexed', now(), now())"),
                    {"path": f"old{number}.jpg", "vector": vector.tobytes()})
            assert connection.scalar(out_of_line) > 0
        store = Store(database)  # upgraded
        try:
            store.write_rows([row("new.jpg", list(vectors[3]), "hn")])
            with engine.begin() as connection:
                assert connection.scalar(out_of_line) == 0
            paths, loaded = store.indexed_vectors("m")
        finally:
            store.close()
    finally:
        engine.dispose()
    assert paths == ["old0.jpg", "old1.jpg", "old2.jpg", "new.jpg"]
    assert np.array_equal(loaded, vectors)


def test_a_reader_of_the_vectors_may_stop_early_or_fail(database, monkeypatch):
    """The vectors come by COPY: a reader that leaves with rows unread must not leave the
    connection inside it."""
    monkeypatch.setattr(store_module, "VECTOR_CHUNK", 1)
    store = Store(database)
    try:
        store.write_rows([row(f"{n}.jpg", [n, 1], f"h{n}") for n in range(3)])
        with store.vector_chunks("m") as (count, chunks):
            assert count == 3 and next(chunks)[0] == ["0.jpg"]
        with pytest.raises(OSError), store.vector_chunks("m") as (count, chunks):
            next(chunks)
            raise OSError("disk full")
        assert store.indexed_vectors("m")[0] == ["0.jpg", "1.jpg", "2.jpg"]
        assert store.generation() == 1
    finally:
        store.close()


def test_a_foreign_or_newer_database_is_refused_and_left_alone(database):
    engine = create_engine(database)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE orders (id integer primary key)"))
    with pytest.raises(StoreError, match="was not made by lookalike"):
        Store(database)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE orders"))
    Store(database).close()
    with engine.begin() as connection:
        connection.execute(text("UPDATE meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(StoreError, match="has schema 99, newer than this lookalike"):
        Store(database)
    engine.dispose()


def test_index_query_and_status_on_postgresql(workspace, catalogue, run_cli, database):
    workspace.write_config(database=database)
    workspace.add_catalogue(catalogue, 4)
    result = run_cli("index")
    assert result.exit_code == 0, result.output
    assert "4 embedded" in result.output
    query = workspace.root / "query.jpg"
    cropped_query(product_photo(2)).save(query)
    answer = json.loads(run_cli("query", str(query), "--json").output)
    assert answer["neighbours"][0]["path"] == "item02.jpg"
    report = json.loads(run_cli("status", "--json").output)
    assert report["indexed"] == 4 and report["database"].startswith("postgresql+psycopg://")
    assert "4 unchanged" in run_cli("index").output


def test_an_unreachable_server_is_one_line(workspace, run_cli):
    workspace.write_config(database=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    result = run_cli("index")
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot open database postgresql+psycopg://")
    assert "connection" in result.output.lower() and len(result.output.splitlines()) == 1


def test_generations_follow_commit_order_under_concurrent_writers(database):
    """A writer that takes generation g and commits late must not let a second writer commit
    g (or less) after it: the second waits for the first and takes g + 1."""
    first, second = Store(database), Store(database)
    try:
        first.write_rows([row("a.jpg", [1, 0], "ha")])
        engine = create_engine(database)
        slow = engine.connect()
        transaction = slow.begin()  # a writer that took generation 2 and has not committed
        slow.execute(text("SELECT value FROM meta WHERE key = 'generation' FOR UPDATE"))
        slow.execute(text("UPDATE meta SET value = '2' WHERE key = 'generation'"))
        writer = threading.Thread(target=second.write_rows, args=([row("b.jpg", [0, 1], "hb")],))
        writer.start()
        deadline = time.monotonic() + 30
        with engine.connect() as watcher:  # the second writer waits on the generation's lock
            while not watcher.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            )).scalar():
                assert time.monotonic() < deadline, "the second writer never waited"
                time.sleep(0.05)
        transaction.commit()
        slow.close()
        writer.join(30)
        assert not writer.is_alive()
        assert first.generation() == 3
        assert list(first.written_since("m", 2)) == ["b.jpg"]  # a reader at 2 sees it
        engine.dispose()
    finally:
        first.close()
        second.close()
