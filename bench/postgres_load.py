"""Loading every vector from PostgreSQL, as the service, the UI and `lookalike query` load
them: `Store.indexed_vectors` against a raw psycopg read of the same column (the floor), its
peak memory, and the database's size against the vectors'. bench/store_scale.py does the
same on SQLite.

Starts its own PostgreSQL server (Debian's, as the tests do: tests/postgres.py), fills a
database with N 512-d vectors through `Store.write_rows`, lays it out as schema 8 left it
(each vector out of line, in TOAST), times the raw reads there, then the upgrade to this
schema as the first command to open it runs it, then each read again; each read in a fresh
process, RUNS times.

    .venv/bin/python bench/postgres_load.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from memory import fill, status_mb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres import PostgresServer  # noqa: E402

from lookalike.store.store import Store  # noqa: E402

MODEL = "bench-model"
VECTOR_BYTES = 512 * 4
RUNS = 3


def raw_read(url: str) -> None:
    """The floors: every vector through a bare psycopg binary server-side cursor, kept as
    arrays; and the bytes of the store's own query by COPY, only counted (no memory to fill)."""
    plain = url.replace("+psycopg", "")
    started = time.perf_counter()
    with psycopg.connect(plain) as connection, \
            connection.cursor(name="raw", binary=True) as cursor:
        cursor.execute("SELECT vector FROM images")
        parts = []
        while rows := cursor.fetchmany(4096):
            parts.append(np.frombuffer(b"".join(vector for (vector,) in rows), np.float32))
    count = sum(len(part) for part in parts) // 512
    print(f"  raw psycopg read      {time.perf_counter() - started:6.2f} s   {count:,} vectors")
    started = time.perf_counter()
    with psycopg.connect(plain) as connection, connection.cursor() as cursor, cursor.copy(
            "COPY (SELECT path, vector FROM images) TO STDOUT (FORMAT BINARY)") as copy:
        size = sum(len(block) for block in copy)
    took = time.perf_counter() - started
    print(f"  COPY's bytes alone    {took:6.2f} s   {size / 2**20:,.0f} MB")


def store_load(url: str) -> None:
    before = status_mb("VmRSS")
    started = time.perf_counter()
    store = Store(url)
    paths, vectors = store.indexed_vectors(MODEL)
    took = time.perf_counter() - started
    store.close()
    peak = status_mb("VmHWM") - before
    print(f"  Store.indexed_vectors {took:6.2f} s   {len(paths):,} vectors; peak "
          f"{peak:,.0f} MB = {peak * 2**20 / max(1, vectors.nbytes):.2f} x the vectors")


def as_schema_8(plain: str) -> None:
    """The store as lookalike of schema 8 left it, for the upgrade to have its real work:
    every vector out of line (PostgreSQL's default for a value of 2 KB), the index on
    (status, removal) without the model, stamped 8."""
    with psycopg.connect(plain) as connection:
        connection.execute("ALTER TABLE images ALTER COLUMN vector TYPE bytea USING vector || "
                           "''::bytea, ALTER COLUMN vector SET STORAGE EXTENDED")
        connection.execute("DROP INDEX ix_images_status_removal_model")
        connection.execute("CREATE INDEX ix_images_status_removal ON images (status, removal)")
        connection.execute("UPDATE meta SET value = '8' WHERE key = 'schema_version'")
        connection.execute("UPDATE alembic_version SET version_num = '0008'")


def on_disk(plain: str, rows: int) -> str:
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE images")  # as autovacuum would, soon after
        size = connection.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return f"{size / 2**20:,.1f} MB on disk = {size / (rows * VECTOR_BYTES):.2f} x the vectors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=2, metavar=("STEP", "URL"))
    args = parser.parse_args()
    if args.child:
        step, url = args.child
        {"raw": raw_read, "load": store_load}[step](url)
        return
    server = PostgresServer()
    try:
        url = server.new_database()
        started = time.perf_counter()
        fill(url, MODEL, args.rows)
        print(f"N={args.rows:,}: filled in {time.perf_counter() - started:.0f} s", flush=True)
        plain = url.replace("+psycopg", "")
        as_schema_8(plain)
        print(f"schema 8: {on_disk(plain, args.rows)}", flush=True)
        for _ in range(RUNS):
            subprocess.run([sys.executable, __file__, "--child", "raw", url], check=True)
        started = time.perf_counter()
        Store(url).close()  # the upgrade, as the first command to open the store runs it
        print(f"upgraded to this schema in {time.perf_counter() - started:.1f} s: "
              f"{on_disk(plain, args.rows)}", flush=True)
        for _ in range(RUNS):
            for step in ("raw", "load"):
                subprocess.run([sys.executable, __file__, "--child", step, url], check=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
