"""Making and upgrading the schema on SQLite and PostgreSQL: a process killed at any statement
leaves the old schema or the new one, several processes opening one new database at once all
succeed, and a schema from a newer lookalike is refused in one line. The processes are real,
killed for real with SIGKILL: children of a fork server that imported the store once
(tests/store_opener.py), so each starts in milliseconds and none inherits a lock held by one
of the test's threads (a plain fork of the test process once hung on one)."""

from __future__ import annotations

import json
import multiprocessing
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from itertools import count

import alembic.command
import alembic.config
import pytest
from sqlalchemy import Engine, create_engine, event, text
from store_opener import open_store
from test_store import schema_differences

from lookalike.store.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError

TRIALS = 10
FORKS = multiprocessing.get_context("forkserver")
FORKS.set_forkserver_preload(["store_opener"])


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request, tmp_path) -> Callable[[], str]:
    """Makes a new, empty database on the backend; its URL."""
    if request.param == "sqlite":
        made = count()
        return lambda: f"sqlite:///{tmp_path}/catalogue{next(made)}.db"
    server = request.getfixturevalue("server")
    return server.new_database


def older_schema(url: str, revision: str = "0001") -> str:
    """``url`` with the schema of Alembic ``revision`` (by default lookalike's first, as
    lookalike 0.1 made it), ready to upgrade."""
    engine = create_engine(url)
    with engine.begin() as connection:
        config = alembic.config.Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        alembic.command.upgrade(config, revision)
    engine.dispose()
    return url


def statements_to_open(url: str) -> int:
    """How many SQL statements opening ``url`` runs (made or upgraded, as it is now)."""
    seen = count()
    listener = lambda *_: next(seen)  # noqa: E731
    event.listen(Engine, "before_cursor_execute", listener)
    try:
        Store(url).close()
    finally:
        event.remove(Engine, "before_cursor_execute", listener)
    return next(seen)


def open_in_child(url: str, kill_before: int | None = None,
                  start_at: float = 0.0) -> multiprocessing.Process:
    """A process that opens ``url`` (``store_opener.open_store``), started."""
    child = FORKS.Process(target=open_store, args=(url, kill_before, start_at))
    child.start()
    return child


def exit_status(child: multiprocessing.Process) -> int:
    """The child's exit code, or minus the signal that killed it."""
    child.join(timeout=120)
    assert child.exitcode is not None, "the child never ended"
    return child.exitcode


def assert_current(url: str) -> None:
    store = Store(url)
    try:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert schema_differences(store) == []
    finally:
        store.close()


def spread(total: int) -> list[int]:
    """``TRIALS`` statement numbers spread over ``total`` (each one when there are fewer)."""
    return sorted({round(i * (total - 1) / max(1, TRIALS - 1)) for i in range(TRIALS)})


@pytest.mark.parametrize("start", ["new", "schema-1"])
def test_a_kill_at_any_statement_leaves_a_database_that_opens(new_database, start):
    prepare = older_schema if start == "schema-1" else (lambda url: url)
    total = statements_to_open(prepare(new_database()))
    assert total > 5
    for statement in spread(total):
        url = prepare(new_database())
        assert exit_status(open_in_child(url, kill_before=statement)) == -signal.SIGKILL
        assert_current(url)  # the next open makes or finishes the schema from where it was


def test_three_processes_opening_one_new_database_at_once_all_succeed(new_database):
    for _ in range(TRIALS):
        url = new_database()
        start_at = time.time() + 0.3
        children = [open_in_child(url, start_at=start_at) for _ in range(3)]
        assert [exit_status(child) for child in children] == [0, 0, 0]
        assert_current(url)


def test_a_sqlite_file_locked_for_writing_when_it_is_opened_is_waited_for(tmp_path):
    # Another connection's write lock on a rollback-journal file: switching it to WAL is
    # answered "locked" at once, without SQLite's busy timeout (the race of processes opening
    # one new file, made certain).
    file = tmp_path / "catalogue.db"
    writer = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, writer.close).start()
    began = time.monotonic()
    assert_current(f"sqlite:///{file}")
    assert time.monotonic() - began >= 0.5


def test_status_of_a_sqlite_file_an_older_lookalike_made_upgrades_it(workspace, run_cli,
                                                                    tmp_path):
    """`status` reads a current file with sqlite3 alone; an older one goes through the store."""
    url = older_schema(f"sqlite:///{tmp_path}/old.db")
    workspace.write_config(database=url)
    result = run_cli("status", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["indexed"] == 0
    with closing(sqlite3.connect(tmp_path / "old.db")) as connection:
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                                  ).fetchall() == [(str(SCHEMA_VERSION),)]


def test_a_revision_of_a_newer_lookalike_is_refused_in_one_line(new_database):
    url = new_database()
    Store(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(StoreError, match="has schema 0099, newer than this lookalike") as refused:
        Store(url)
    assert "\n" not in str(refused.value)
