"""The store at N vectors: its size on disk against the vectors' own, loading every vector
against a raw SQLite read of the same column (and the load's peak memory), writing the
snapshot (time, memory), and how long a cold `lookalike status`, `lookalike query --similar`
and `lookalike query PHOTO` (a product photo: the config's pipeline, then one scan) take at N
and at one image.

Fills a SQLite store in DIR with N 512-d vectors under the config's model id (kept there and
reused by the next run on the same DIR), then times each step in a fresh process.

    .venv/bin/python bench/store_scale.py --config CONFIG --dir DIR [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from memory import fill, status_mb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from builders import product_photo  # noqa: E402
from lookalike.store.snapshot import publish_snapshot  # noqa: E402
from lookalike.store.store import Store  # noqa: E402

VECTOR_BYTES = 512 * 4
RUNS = 3  # of each timed command; the fastest is printed beside the slowest


def raw_read(database: Path) -> None:
    """Every vector as one matrix through the bare sqlite3 module: the floor for a load."""
    connection = sqlite3.connect(database)
    started = time.perf_counter()
    cursor = connection.execute("SELECT vector FROM images")  # every row is indexed here
    parts = []
    while rows := cursor.fetchmany(4096):
        parts.append(np.frombuffer(b"".join(vector for (vector,) in rows), dtype=np.float32))
    count = sum(len(part) for part in parts) // 512
    print(f"  raw sqlite3 read      {time.perf_counter() - started:6.2f} s   {count:,} vectors")


def store_load(database: Path, model: str) -> None:
    """Store.indexed_vectors, as the service, the UI and `lookalike query` load."""
    before = status_mb("VmRSS")
    started = time.perf_counter()
    paths, vectors = Store(f"sqlite:///{database}").indexed_vectors(model)
    took = time.perf_counter() - started
    peak = status_mb("VmHWM") - before
    print(f"  Store.indexed_vectors {took:6.2f} s   {len(paths):,} vectors; peak "
          f"{peak:,.0f} MB = {peak * 2**20 / max(1, vectors.nbytes):.2f} x the vectors")


def snapshot(database: Path, model: str, directory: Path) -> None:
    """publish_snapshot, as the service writes it: its time and its memory beyond what the
    process held before (anonymous memory sampled every 20 ms; VmHWM also counts the pages
    of the .npy mapped while the .pkl is written from it)."""
    store = Store(f"sqlite:///{database}")
    before, peak, done = status_mb("RssAnon"), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], status_mb("RssAnon"))

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    rows = publish_snapshot(store, model, directory / "feature_vectors.pkl")
    took = time.perf_counter() - started
    done.set()
    sampler.join()
    vectors = rows * VECTOR_BYTES / 2**20
    print(f"  publish_snapshot      {took:6.2f} s   {rows:,} vectors; anonymous memory +"
          f"{peak[0] - before:,.0f} MB = {(peak[0] - before) / vectors:.2f} x the vectors; "
          f"VmHWM {status_mb('VmHWM'):,.0f} MB")


def timed(command: list[str]) -> str:
    """The fastest and slowest of RUNS runs, and the largest resident memory of any."""
    took, peak = [], 0
    for _ in range(RUNS):
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        took.append(time.perf_counter() - started)
        assert os.waitstatus_to_exitcode(status) == 0, command
        peak = max(peak, usage.ru_maxrss)
    return f"{min(took):5.2f}-{max(took):5.2f} s, max RSS {peak / 1024:,.0f} MB"


def commands(config: Path, database: Path, first: str) -> None:
    """A copy of ``config`` (beside it, so its relative model paths hold) naming ``database``."""
    copy = config.with_name(f"store-scale-{database.stem}.toml")
    copy.write_text(re.sub(r'(?m)^database = ".*"$', f'database = "sqlite:///{database}"',
                           config.read_text()))
    lookalike = str(Path(sys.executable).with_name("lookalike"))
    print(f"  lookalike status           {timed([lookalike, 'status', '--config', str(copy)])}")
    print(f"  lookalike query --similar  "
          f"{timed([lookalike, 'query', '--similar', first, '--config', str(copy)])}")
    photo = database.with_suffix(".jpg")
    product_photo(7).save(photo)
    print(f"  lookalike query PHOTO      "
          f"{timed([lookalike, 'query', str(photo), '--config', str(copy)])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, metavar=("STEP", "DATABASE", "MODEL"))
    args = parser.parse_args()
    if args.child:
        step, database, model = args.child
        {"raw": lambda: raw_read(Path(database)),
         "load": lambda: store_load(Path(database), model),
         "snapshot": lambda: snapshot(Path(database), model, args.dir)}[step]()
        return
    from lookalike.api.app import App

    model = App(str(args.config)).pipeline.model_id
    args.dir.mkdir(parents=True, exist_ok=True)
    for rows in (1, args.rows):
        database = args.dir / f"store-{rows}.db"
        if not database.exists():
            started = time.perf_counter()
            fill(f"sqlite:///{database}", model, rows)
            print(f"N={rows:,}: filled in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        Store(f"sqlite:///{database}").close()  # upgrades a store of an older schema
        print(f"N={rows:,}: opened in {time.perf_counter() - started:.1f} s")
        with sqlite3.connect(database) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            page = connection.execute("PRAGMA page_size").fetchone()[0]
        size = database.stat().st_size
        print(f"N={rows:,}: {size / 2**20:,.1f} MB on disk ({page // 1024} KB pages) = "
              f"{size / (rows * VECTOR_BYTES):.2f} x the vectors")
        if rows > 1:
            for step in ("raw", "load", "snapshot"):
                subprocess.run([sys.executable, __file__, "--config", str(args.config), "--dir",
                                str(args.dir), "--child", step, str(database), model],
                               check=True)
        commands(args.config, database, "0000000.jpg")


if __name__ == "__main__":
    main()
