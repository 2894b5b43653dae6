"""Resident memory of the service at N stored vectors, for each index.

Fills a SQLite store with N 512-d vectors under the configured pipeline's model id, then,
in a fresh process per index, does what `lookalike run` does at start: load every model,
load the index from the store, write the snapshot. Prints the resident memory (VmRSS) after
the models, after the index, and the peak (VmHWM) including the snapshot write.

    .venv/bin/python bench/memory.py --config CONFIG [--sizes 100000,1000000]
        [--indexes exact,hnsw]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.api.app import App
from lookalike.search.query import load_index
from lookalike.store.snapshot import publish_snapshot
from lookalike.store.store import ImageRow, Store


def status_mb(field: str, pid: int | str = "self") -> float:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def unit_vectors(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Non-negative 512-d unit vectors, like ResNet features after ReLU."""
    vectors = np.abs(rng.standard_normal((rows, 512), dtype=np.float32))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fill(url: str, model: str, count: int) -> None:
    """``count`` random unit vectors of ``model`` written into the store at ``url``."""
    store = Store(url)
    rng = np.random.default_rng(0)
    for start in range(0, count, 10_000):
        rows = min(10_000, count - start)
        vectors = unit_vectors(rng, rows)
        store.write_rows(ImageRow(f"{start + i:07d}.jpg", f"{start + i:064x}", 1, 1, 1, 1, model,
                               vectors[i].tobytes()) for i in range(rows))
    store.close()


def child(config: str, index_name: str, database: str, snapshot: str) -> None:
    app = App(config)
    app.pipeline.warm_up()
    models = status_mb("VmRSS")
    store = Store(f"sqlite:///{database}")
    started = time.perf_counter()
    index = load_index(store, app.pipeline.model_id, app.vector_index(index_name))
    loaded = time.perf_counter() - started
    with_index = status_mb("VmRSS")
    publish_snapshot(store, app.pipeline.model_id, Path(snapshot))
    print(f"  {index_name:<6} models {models:7.0f} MB   + index {with_index:7.0f} MB "
          f"(loaded in {loaded:6.1f} s)   peak with snapshot write {status_mb('VmHWM'):7.0f} MB"
          f"   {index.size:,} vectors", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--indexes", default="exact,hnsw")
    parser.add_argument("--child", nargs=3, metavar=("INDEX", "DATABASE", "SNAPSHOT"))
    args = parser.parse_args()
    if args.child:
        child(args.config, *args.child)
        return
    model = App(args.config).pipeline.model_id
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            database = Path(tmp) / "bench.db"
            started = time.perf_counter()
            fill(f"sqlite:///{database}", model, size)
            print(f"N={size:>9,}  store filled in {time.perf_counter() - started:.0f} s, "
                  f"{database.stat().st_size / 2**20:,.0f} MB", flush=True)
            for name in args.indexes.split(","):
                subprocess.run([sys.executable, __file__, "--config", args.config, "--child",
                                name, str(database), str(Path(tmp) / "snapshot.pkl")], check=True)


if __name__ == "__main__":
    main()
