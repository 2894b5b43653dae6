"""The store: SQLite (or any SQLAlchemy database) as the source of truth for every vector."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import (
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

from lookalike.base.chunks import SQL_CHUNK, chunks
from lookalike.base.errors import LookalikeError
from lookalike.store.schema import FAILED, INDEXED, SCHEMA_VERSION, is_current
from lookalike.store.status import NodeStatus, StoreReader, Tallies
from lookalike.store.tables import ImageRecord, Meta, ModelName, Removal
from lookalike.store.urls import is_server, masked

log = logging.getLogger(__name__)

# Write generations whose removals stay logged: a reader further behind compares every path.
REMOVALS_KEPT = 10_000
# SQLite's page: a row with its 2 KB vector takes a whole 4 KB page (SQLite's default), while
# seven fill 16 KB.
PAGE_SIZE = 16384
# How long a SQLite connection waits for another's lock.
BUSY_MILLISECONDS = 30000
# Rows per read when loading vectors: 8 MB of 512-d vectors a chunk.
VECTOR_CHUNK = 4096
# The meta key holding the catalogue's id (written in its root's mark by daemon/root.py).
ROOT_KEY = "catalogue_root"
# Alembic's scripts; revision "000N" makes schema N.
MIGRATIONS = Path(__file__).with_name("migrations")
# Several nodes opening one new PostgreSQL database at once: the first makes the schema.
SCHEMA_LOCK = 0x6C6F6F6B  # "look"


# Waits between tries to reach the database again, doubled from the first up to the last.
OUTAGE_RETRY_SECONDS = (1.0, 30.0)
# SQLSTATE classes of a server that is not there yet (08: connection exception; 57: starting
# up or shutting down): waited for. Others (a wrong password, no such database) are refusals.
UNREACHABLE_STATES = ("08", "57")
# A dead peer's TCP connection is noticed after about IDLE + INTERVAL * COUNT seconds.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3


class StoreError(LookalikeError):
    """The database cannot be used: not ours, corrupt, or from a newer lookalike."""


class StoreUnreachable(StoreError):
    """The database server cannot be reached (down, starting, or the network is)."""


# Paths and their (n, D) float32 vectors, as the store hands them over in chunks.
VectorChunk = tuple[list[str], np.ndarray]

# A write whose rows rest on claims: given the write's transaction and the paths it would
# write, the paths whose claims this node no longer holds (their rows are not written).
Fence = Callable[[Session, list[str]], set[str]]


def server_settings(url: URL, timeout_seconds: float) -> dict[str, Any]:
    """libpq parameters of lookalike's own PostgreSQL sessions. No node waits longer than
    ``timeout_seconds`` for another's lock (lock_timeout), and a transaction left idle that
    long is ended by the server (idle_in_transaction_session_timeout): a node paused inside
    a write (SIGSTOP, a paused VM) frees its locks instead of freezing every node. TCP
    keepalives, on both ends, notice a peer that vanished (a cut network) in about a
    minute instead of the system's two hours.

    A parameter the database URL sets itself is left to it, but for ``options``: the URL's
    own come first and these after them, so the timeouts hold and the rest is kept."""
    milliseconds = max(1, round(timeout_seconds * 1000))
    settings = {
        "options": f"-c lock_timeout={milliseconds} "
                   f"-c idle_in_transaction_session_timeout={milliseconds} "
                   f"-c tcp_keepalives_idle={KEEPALIVE_IDLE} "
                   f"-c tcp_keepalives_interval={KEEPALIVE_INTERVAL} "
                   f"-c tcp_keepalives_count={KEEPALIVE_COUNT}",
        "keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE,
        "keepalives_interval": KEEPALIVE_INTERVAL, "keepalives_count": KEEPALIVE_COUNT,
        "connect_timeout": 10, "application_name": f"lookalike {os.getpid()}",
    }
    own = url.query.get("options")
    if own:
        own = own if isinstance(own, str) else " ".join(own)
        settings["options"] = f"{own} {settings['options']}"
    return {key: value for key, value in settings.items()
            if key == "options" or key not in url.query}


def dialect_insert(engine: Engine):
    """The INSERT of ``engine``'s dialect, the one with ON CONFLICT clauses."""
    return {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[engine.dialect.name]


def driver_connection(session: Session):
    """The DB-API connection (sqlite3's or psycopg's) under ``session``, in its transaction."""
    return session.connection().connection.dbapi_connection


@contextmanager
def _path_vector_rows(connection, key: int) -> Iterator[Iterator[tuple[str, bytes]]]:
    """(path, vector bytes) of every indexed row of the model ``key``, in the order the rows
    are stored, streamed by the driver; for the block. The two values are the store's own (an
    integer and a constant): no parameters, whose style differs between the drivers."""
    driver = connection.connection
    if connection.dialect.name == "sqlite":
        # A unary + keeps SQLite off the indexes, whose order makes the reads random.
        cursor = driver.cursor()
        try:
            cursor.execute(f"SELECT path, vector FROM images WHERE +model_id = {int(key)} "
                           f"AND +status = '{INDEXED}'")
            yield iter(cursor)
        finally:
            cursor.close()  # also where the reader stopped early
        return
    # PostgreSQL: COPY in its binary format, 2.7 times a server-side cursor's speed (binary
    # too; as text each vector comes as hex, twice its size). Its planner scans the table.
    with driver.cursor() as cursor, cursor.copy(
            f"COPY (SELECT path, vector FROM images WHERE model_id = {int(key)} AND status = "
            f"'{INDEXED}') TO STDOUT (FORMAT BINARY)") as copy:
        copy.set_types(["text", "bytea"])
        yield copy.rows()
        while copy.read():  # a reader that stopped early: the connection is left in the copy
            pass


def lock_for_transaction(connection, key: int) -> None:
    """On PostgreSQL, wait for the advisory lock ``key``, held until the transaction ends;
    on SQLite, whose writers take turns anyway, nothing."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def is_unreachable(exc: DBAPIError) -> bool:
    """True when ``exc`` says the server is not there (rather than that it refused us)."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    state = getattr(exc.orig, "sqlstate", None)
    if state is not None:
        return state.startswith(UNREACHABLE_STATES)
    # A failed connection has no SQLSTATE (psycopg): a server that answered and refused says
    # FATAL, unless it is only starting or stopping.
    message = str(exc.orig)
    return "FATAL:" not in message or "the database system is" in message


# The server ended the session (idle in transaction too long, an administrator, a restart):
# the work of the transaction is lost, the database is still there.
SESSION_ENDED_STATES = ("25P03", "57P01", "57P02", "57P03")


def is_outage(exc: DBAPIError) -> bool:
    """True when ``exc`` means the database cannot be used for now (down, unreachable, this
    session ended, another node's lock not freed in time): wait, then start afresh."""
    return (isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated
            or getattr(exc.orig, "sqlstate", None) in SESSION_ENDED_STATES)


class FileState(NamedTuple):
    """What the store knows of a file without loading its vector (a tuple: a start makes a
    million of them)."""

    size: int
    mtime_ns: int
    model: str | None
    status: str
    limits: str | None  # of a failed file: the reading limits it failed under


@dataclass(frozen=True)
class ImageRow:
    """One file's row as ingest writes it: identity, stat and vector or error (the sha256 is
    empty for a file refused before it was read whole)."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    width: int | None = None
    height: int | None = None
    model: str | None = None
    vector: bytes | None = None
    error: str | None = None
    removal: str | None = None  # how the background was removed (a step id)
    limits: str | None = None  # of a failed file: the pipeline's reading limits


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (CLI queries) run while the daemon writes; the timeout waits out locks.
    # The timeout first: switching a new file to WAL takes a lock another process may hold.
    # The page size before: it takes effect in a new file only, and not after WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_MILLISECONDS}")
    cursor.execute(f"PRAGMA page_size={PAGE_SIZE}")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _switch_to_wal(cursor) -> None:
    """``PRAGMA journal_mode=WAL``, retried for ``BUSY_MILLISECONDS``: while another process
    switches the same new file, SQLite answers "locked" at once instead of waiting out the
    busy timeout (waiting with the read lock the pragma holds could deadlock)."""
    deadline = time.monotonic() + BUSY_MILLISECONDS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _repack(connection) -> None:
    """Rewrite a SQLite file made with smaller pages (by lookalike before schema 7) with
    ``PAGE_SIZE`` ones, once: VACUUM, outside WAL, which fixes the page size. Left for a
    later open while another process has the file open (leaving WAL needs it alone)."""
    if connection.exec_driver_sql("PRAGMA page_size").scalar() >= PAGE_SIZE:
        return
    connection.exec_driver_sql("PRAGMA busy_timeout=0")
    try:
        connection.exec_driver_sql("PRAGMA journal_mode=DELETE")
    except OperationalError:
        return
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_MILLISECONDS}")
    log.warning("rewriting database %s with %d KB pages (once: about half the space for the "
                "same vectors; a minute or two per million images)", connection.engine.url,
                PAGE_SIZE // 1024)
    try:
        connection.exec_driver_sql(f"PRAGMA page_size={PAGE_SIZE}")
        connection.exec_driver_sql("VACUUM")
    except OperationalError as exc:  # the disk full, most likely: the file is as it was
        log.warning("kept the database's pages as they were: %s", str(exc.orig).splitlines()[0])
    finally:
        _switch_to_wal(connection.connection.dbapi_connection.cursor())


def _rows_where(session: Session, query, column, values: Iterable[str]) -> list:
    """The rows of ``query`` whose ``column`` is one of ``values``, in chunks of 500 (SQLite
    limits the parameters of one statement)."""
    rows = []
    for chunk in chunks(values):
        rows += session.execute(query.where(column.in_(chunk))).all()
    return rows


class Store:
    def __init__(self, url: str, timeout_seconds: float = 15.0):
        self.url = url
        self._kept: dict[tuple, tuple[int, Any]] = {}  # key -> (generation, value)
        self._model_keys: dict[str, int] = {}  # committed keys: a model id's never changes
        try:
            # A server restarted meanwhile has closed the pooled connections: test each first
            # (a SQLite file has no server to lose).
            parsed = make_url(url)
            connect_args = (server_settings(parsed, timeout_seconds)
                            if parsed.get_backend_name() == "postgresql" else {})
            self.engine = create_engine(url, pool_pre_ping=is_server(url),
                                        connect_args=connect_args)
        except (ImportError, NoSuchModuleError) as exc:
            raise StoreError(f"cannot open database {masked(url)}: its driver is not installed "
                             f"({exc})") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        images = ImageRecord.__table__
        insert = dialect_insert(self.engine)(images)
        self._upsert_image = insert.on_conflict_do_update(
            index_elements=[images.c.path],
            set_={column.name: insert.excluded[column.name] for column in images.columns
                  if column.name not in ("id", "path", "created_at")}).returning(images.c.id)
        try:
            self._prepare_schema()
        except DBAPIError as exc:
            self.engine.dispose()
            reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
            error = StoreUnreachable if is_server(url) and is_unreachable(exc) else StoreError
            raise error(f"cannot open database {self.engine.url}: {reason}") from None
        except StoreError:
            self.engine.dispose()
            raise

    def _prepare_schema(self) -> None:
        """Make or upgrade the schema with Alembic in one transaction, under an exclusive lock
        taken before anything is inspected: a process killed at any moment leaves the old
        schema or the new one, and of several opening a new database at once one makes it
        while the others wait. A database made before lookalike used Alembic says its schema
        in meta."""
        with self.engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # pysqlite runs each CREATE in a transaction of its own: the driver is told to
                # leave transactions alone, and this one is begun by hand, exclusively.
                driver = connection.connection.dbapi_connection
                driver.isolation_level = None
                try:
                    connection.exec_driver_sql("BEGIN EXCLUSIVE")
                    self._make_or_upgrade(connection)
                    connection.commit()
                    _repack(connection)
                finally:
                    connection.rollback()
                    driver.isolation_level = ""
            else:
                with connection.begin():
                    lock_for_transaction(connection, SCHEMA_LOCK)
                    self._make_or_upgrade(connection)

    def _make_or_upgrade(self, connection) -> None:
        tables = set(inspect(connection).get_table_names())
        if tables and "meta" not in tables:
            raise StoreError(f"database {self.engine.url} was not made by lookalike")
        version = connection.scalar(select(Meta.value).where(
            Meta.key == "schema_version")) if tables else None
        if version is not None and not version.isdigit():
            raise StoreError(f"database {self.engine.url} has a corrupt schema version "
                             f"({version!r})")
        stamped = connection.scalar(text("SELECT version_num FROM alembic_version")) \
            if "alembic_version" in tables else None
        if is_current(version, stamped):
            return  # current: Alembic (a tenth of a second to import) is not needed
        import alembic.command
        import alembic.config
        import alembic.script

        migrations = alembic.config.Config()
        migrations.set_main_option("script_location", str(MIGRATIONS))
        known = {script.revision for script in
                 alembic.script.ScriptDirectory.from_config(migrations).walk_revisions()}
        newer = version if version is not None and int(version) > SCHEMA_VERSION else (
            stamped if stamped is not None and stamped not in known else None)
        if newer is not None:
            raise StoreError(
                f"database {self.engine.url} has schema {newer}, newer than this lookalike "
                f"understands ({SCHEMA_VERSION}): upgrade lookalike")
        migrations.attributes["connection"] = connection
        if version is not None and stamped is None:
            alembic.command.stamp(migrations, f"{int(version):04d}")
        if version is not None and int(version) < SCHEMA_VERSION:
            log.info("upgrading database %s from schema %s to %d", self.engine.url, version,
                     SCHEMA_VERSION)
        alembic.command.upgrade(migrations, "head")

    @classmethod
    def when_reachable(cls, url: str, timeout_seconds: float, stop: threading.Event) -> Store:
        """The store, once its server can be reached: a node started before its database
        server (at boot) waits for it, logging once, with the backoff of an outage later on.
        Raises StoreUnreachable when ``stop`` is set first."""
        wait, longest = OUTAGE_RETRY_SECONDS
        while True:
            try:
                return cls(url, timeout_seconds)
            except StoreUnreachable as exc:
                if wait == OUTAGE_RETRY_SECONDS[0]:
                    log.error("%s: waiting for it, trying again up to every %.0f s", exc,
                              longest)
                if stop.wait(wait):
                    raise
                wait = min(2 * wait, longest)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction, committed at the end of the block."""
        with Session(self.engine) as session, session.begin():
            yield session

    def generation(self) -> int:
        """How many write transactions changed the images: equal numbers, equal catalogue."""
        return int(self.get_meta("generation") or 0)

    def removed_since(self, generation: int) -> list[str] | None:
        """Paths taken out of the store by writes after ``generation``; None when the log of
        removals no longer reaches back that far (compare every path instead)."""
        with self.session() as session:
            complete_from = session.get(Meta, "removals_from")
            if complete_from and generation + 1 < int(complete_from.value):
                return None
            return list(session.scalars(
                select(Removal.path).where(Removal.generation > generation)))

    @staticmethod
    def _log_removals(session: Session, generation: int, paths: list[str]) -> None:
        """Log ``paths`` as removed by this write; forget removals too old to be asked for."""
        # Multi-row statements, not an executemany (see _upsert_images).
        for chunk in chunks(paths, SQL_CHUNK // 2):
            session.execute(insert(Removal).values(
                [{"generation": generation, "path": path} for path in chunk]))
        oldest_kept = generation - REMOVALS_KEPT + 1
        session.execute(delete(Removal).where(Removal.generation < oldest_kept))
        session.merge(Meta(key="removals_from", value=str(oldest_kept)))

    @staticmethod
    def _next_generation(session: Session) -> int:
        """The next write generation, its row locked until this transaction commits: a second
        writer waits here and takes the one after, so generations follow commit order and a
        reader that holds g never misses rows stamped with less (on PostgreSQL; SQLite lets
        one writer in at a time anyway)."""
        row = session.get(Meta, "generation", with_for_update=True)
        generation = int(row.value) + 1 if row else 1
        session.merge(Meta(key="generation", value=str(generation)))
        return generation

    def _model_key(self, session: Session, model: str, add: bool = False) -> int | None:
        """The key of ``model`` in ``models`` (added first with ``add``); None when it has
        none, and so no rows."""
        key = self._model_keys.get(model)
        if key is not None:
            return key
        key = session.scalar(select(ModelName.id).where(ModelName.name == model))
        if key is not None:
            self._model_keys[model] = key
        elif add:  # not kept until committed: this transaction may yet be rolled back
            session.execute(dialect_insert(self.engine)(ModelName).values(name=model)
                            .on_conflict_do_nothing())
            key = session.scalar(select(ModelName.id).where(ModelName.name == model))
        return key

    def _of_model(self, session: Session, model: str):
        """The condition "a row of ``model``" (false for a model with no rows)."""
        key = self._model_key(session, model)
        return false() if key is None else ImageRecord.model_id == key

    @staticmethod
    def _model_names(session: Session) -> dict[int | None, str | None]:
        """Each model key's id (and None's None)."""
        return {None: None, **dict(session.execute(select(ModelName.id, ModelName.name)).all())}

    def get_meta(self, key: str) -> str | None:
        with self.session() as session:
            row = session.get(Meta, key)
            return row.value if row else None

    def meta_once(self, key: str, value: str) -> str:
        """The value of ``key``, set to ``value`` first where it has none (of several
        processes setting it at once, one wins and all get its value)."""
        with self.session() as session:
            session.execute(dialect_insert(self.engine)(Meta).values(key=key, value=value)
                            .on_conflict_do_nothing())
            return session.get(Meta, key).value

    def set_meta(self, key: str, value: str) -> None:
        with self.session() as session:
            session.merge(Meta(key=key, value=value))

    def file_states(self, paths: Iterable[str] | None = None) -> dict[str, FileState]:
        """What the store knows of each of ``paths`` (of every file when None: each start
        compares them all with the folder, so they are read through the driver's own cursor,
        as ``vector_chunks`` reads, in half the time of SQLAlchemy's rows)."""
        columns = (ImageRecord.path, ImageRecord.size, ImageRecord.mtime_ns,
                   ImageRecord.model_id, ImageRecord.status, ImageRecord.limits)
        with self.session() as session:
            names = self._model_names(session)
            if paths is None:
                cursor = session.connection().connection.cursor()
                try:
                    cursor.execute("SELECT path, size, mtime_ns, model_id, status, limits "
                                   "FROM images")
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
            else:
                rows = _rows_where(session, select(*columns), ImageRecord.path, paths)
            return {path: FileState(size, mtime_ns, names[key], status, limits)
                    for path, size, mtime_ns, key, status, limits in rows}

    def indexed_rows(self, hashes: Iterable[str], model: str) -> dict[str, ImageRow]:
        """An indexed row of ``model`` for each content hash that has one, so equal bytes are
        embedded once."""
        found = {}
        with self.session() as session:
            query = select(ImageRecord).where(self._of_model(session, model),
                                              ImageRecord.status == INDEXED)
            for (row,) in _rows_where(session, query, ImageRecord.sha256, hashes):
                found.setdefault(row.sha256, ImageRow(
                    row.path, row.sha256, row.size, row.mtime_ns, row.width, row.height,
                    model, row.vector, removal=row.removal))
        return found

    def write_rows(self, rows: Iterable[ImageRow], gone: Iterable[str] = (),
                   fence: Fence | None = None) -> int:
        """Insert or replace the row of each file and delete the rows of ``gone``, in one
        transaction (one generation); returns how many rows were deleted. With a ``fence``,
        the paths whose claims were lost meanwhile (this node was paused past its lease and
        another took them over) are left alone, checked in the same transaction."""
        rows, gone = list(rows), list(gone)
        if not rows and not gone:
            return 0
        with self.session() as session:
            if fence is not None:
                lost = fence(session, [row.path for row in rows] + gone)
                if lost:
                    log.warning("%d file(s) not stored: their claims passed to another node "
                                "(this one was paused past its lease?): %s", len(lost),
                                ", ".join(sorted(lost)[:5]))
                    rows = [row for row in rows if row.path not in lost]
                    gone = [path for path in gone if path not in lost]
                    if not rows and not gone:
                        return 0
            generation = self._next_generation(session)
            keys = {model: self._model_key(session, model, add=True)
                    for model in {item.model for item in rows} - {None}}
            values = [{
                "path": item.path, "sha256": item.sha256, "size": item.size,
                "mtime_ns": item.mtime_ns, "width": item.width, "height": item.height,
                "model_id": keys.get(item.model), "vector": item.vector, "error": item.error,
                "removal": item.removal, "limits": item.limits,
                "status": FAILED if item.error is not None else INDEXED,
                "generation": generation} for item in rows]
            if values:
                self._upsert_images(session, values)
            if not gone:
                return 0
            deleted = session.execute(
                delete(ImageRecord).where(ImageRecord.path.in_(gone))).rowcount
            if deleted:
                self._log_removals(session, generation, gone)
            return deleted

    def _upsert_images(self, session: Session, values: list[dict[str, Any]]) -> None:
        """Insert each row, or replace the row of its path (its id and created_at kept). With
        RETURNING, SQLAlchemy sends the rows as multi-row statements ("insertmanyvalues"),
        compiled once: not as an executemany, which psycopg pipelines, and a node paused
        mid-pipeline leaves its session active, where the server's idle timeout never ends
        it and its locks freeze every other node."""
        session.execute(self._upsert_image, values).all()

    def paths_under(self, folder: str) -> list[str]:
        """Stored paths inside ``folder`` (not those of a folder that merely starts alike)."""
        with self.session() as session:
            under = ImageRecord.path.startswith(folder + "/", autoescape=True)
            return list(session.scalars(select(ImageRecord.path).where(under)))

    def move(self, source: str, destination: str) -> bool:
        """Give the row of ``source`` the path ``destination`` (replacing the row there);
        False, changing nothing, when ``source`` has no row (a folder move renamed it)."""
        with self.session() as session:
            if session.scalar(select(ImageRecord.id).where(ImageRecord.path == source)) is None:
                return False
            generation = self._next_generation(session)
            session.execute(delete(ImageRecord).where(ImageRecord.path == destination))
            session.execute(
                update(ImageRecord).where(ImageRecord.path == source)
                .values(path=destination, generation=generation)
            )
            # A destination written again by this move is read back after its removal.
            self._log_removals(session, generation, [source, destination])
            return True

    def move_folder(self, source: str, destination: str) -> list[tuple[str, str]]:
        """Move every row under folder ``source`` to folder ``destination``; returns the
        (old, new) path of each row moved."""
        with self.session() as session:
            generation = self._next_generation(session)
            prefix = source + "/"
            rows = session.execute(
                select(ImageRecord.id, ImageRecord.path).where(
                    ImageRecord.path.startswith(prefix, autoescape=True)
                )
            ).all()
            moved = []
            for row_id, path in rows:
                new_path = destination + "/" + path[len(prefix):]
                session.execute(delete(ImageRecord).where(ImageRecord.path == new_path))
                session.execute(
                    update(ImageRecord).where(ImageRecord.id == row_id)
                    .values(path=new_path, generation=generation)
                )
                moved.append((path, new_path))
            if moved:
                self._log_removals(session, generation, [old for old, _ in moved])
            return moved

    @contextmanager
    def vector_chunks(self, model: str) -> Iterator[tuple[int, Iterator[VectorChunk]]]:
        """The count of ``model``'s indexed rows, and its indexed (paths, (n, D) float32
        vectors) in chunks of ``VECTOR_CHUNK`` rows, in the order the rows are stored; the
        chunks come while the block is open. Rows committed while they are read may come
        beyond the count (each read runs on its own snapshot), or fewer than it.

        Read through the driver itself, each chunk turned into an array by one
        ``frombuffer``: the read costs what the database takes to hand the bytes over
        (through SQLAlchemy's rows it took twice as long)."""
        with self.session() as session:
            key = self._model_key(session, model)
            if key is None:
                yield 0, iter(())
                return
            count = session.scalar(select(func.count()).where(
                ImageRecord.model_id == key, ImageRecord.status == INDEXED))
            with _path_vector_rows(session.connection(), key) as rows:

                def chunks() -> Iterator[VectorChunk]:
                    while chunk := list(islice(rows, VECTOR_CHUNK)):
                        values = np.frombuffer(b"".join(vector for _, vector in chunk),
                                               dtype=np.float32)
                        yield [path for path, _ in chunk], values.reshape(len(chunk), -1)

                yield count, chunks()

    def indexed_vectors(self, model: str) -> tuple[list[str], np.ndarray]:
        """Paths and an (N, D) float32 matrix of every indexed vector of ``model``, in the
        order the rows are stored: allocated once, a million vectors need their own size."""
        paths: list[str] = []
        matrix, late = None, []
        with self.vector_chunks(model) as (count, chunks):
            for chunk, values in chunks:
                if matrix is None:
                    matrix = np.empty((count, values.shape[1]), dtype=np.float32)
                fits = max(0, min(len(chunk), count - len(paths)))
                matrix[len(paths):len(paths) + fits] = values[:fits]
                late.extend(values[fits:])
                paths.extend(chunk)
        if late:
            matrix = np.concatenate([matrix, np.stack(late)])
        if matrix is None:
            return paths, np.zeros((0, 0), dtype=np.float32)
        return paths, matrix[: len(paths)]

    def missing_reasons(self, paths: Iterable[str], model: str) -> dict[str, str]:
        """Why each path has no vector of ``model`` to search from (one line each)."""
        reasons = dict.fromkeys(paths, "not in the catalogue")
        with self.session() as session:
            key = self._model_key(session, model)
            for chunk in chunks(list(reasons)):
                rows = session.execute(
                    select(ImageRecord.path, ImageRecord.model_id, ImageRecord.status,
                           ImageRecord.error).where(ImageRecord.path.in_(chunk)))
                for path, row_key, status, error in rows:
                    reasons[path] = (f"not indexed: {error}" if status == FAILED
                                     else "not indexed by this model yet" if row_key != key
                                     else "indexed since the index was loaded: ask again")
        return reasons

    def indexed_paths(self, model: str, contains: str = "", offset: int = 0,
                      limit: int | None = None) -> list[str]:
        """The indexed paths of ``model`` that contain ``contains``, in path order, ``limit``
        of them from ``offset``: a catalogue of millions is browsed a page at a time."""
        with self.session() as session:
            return list(session.scalars(
                select(ImageRecord.path).where(*self._indexed(session, model, contains))
                .order_by(ImageRecord.path).offset(offset).limit(limit)))

    def count_indexed(self, model: str, contains: str = "") -> int:
        with self.session() as session:
            return session.scalar(
                select(func.count()).where(*self._indexed(session, model, contains)))

    def _indexed(self, session: Session, model: str, contains: str) -> tuple:
        where = (self._of_model(session, model), ImageRecord.status == INDEXED)
        if contains:
            where += (ImageRecord.path.contains(contains, autoescape=True),)
        return where

    def written_since(self, model: str, generation: int) -> dict[str, np.ndarray | None]:
        """Each row written after ``generation``: its vector where it is indexed by ``model``,
        else None (failed, or another model's)."""
        query = select(ImageRecord.path, ImageRecord.model_id, ImageRecord.status,
                       ImageRecord.vector).where(ImageRecord.generation > generation)
        with self.session() as session:
            key = self._model_key(session, model)
            return {path: np.frombuffer(vector, dtype=np.float32)
                    if key is not None and row_key == key and status == INDEXED else None
                    for path, row_key, status, vector in session.execute(query)}

    def _kept_until_next_write(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, reused until the store is written again: the UI asks for counts and
        failures every few seconds, and scanning millions of rows takes a noticeable fraction
        of a second."""
        generation = self.generation()
        kept = self._kept.get(key)
        if kept is None or kept[0] != generation:
            kept = self._kept[key] = (generation, compute())
        return kept[1]

    # What `lookalike status` reports (store/status.py), read by its plain SQL: the counts
    # kept until the next write.

    def tallies(self) -> Tallies:
        """Rows by model and status, and indexed rows by removal way."""
        return self._kept_until_next_write(("tallies",), lambda: self._read(StoreReader.tallies))

    def meta(self) -> dict[str, str]:
        """Every meta key with its value."""
        return self._read(StoreReader.meta)

    def nodes(self) -> list[NodeStatus]:
        """Every node (process) working on the store, oldest first, and whether it is live."""
        return self._read(StoreReader.nodes)

    def _read(self, read: Callable[[StoreReader], Any]) -> Any:
        with self.session() as session:
            return read(StoreReader(driver_connection(session)))

    def failures(self, limit: int = 20) -> list[tuple[str, str]]:
        """The first ``limit`` failed files by path, with their errors."""
        return self._kept_until_next_write(("failures", limit), lambda: self._failed_rows(limit))

    def _failed_rows(self, limit: int) -> list[tuple[str, str]]:
        with self.session() as session:
            rows = session.execute(
                select(ImageRecord.path, ImageRecord.error)
                .where(ImageRecord.status == FAILED).order_by(ImageRecord.path).limit(limit)
            ).all()
        return [(path, error or "") for path, error in rows]
