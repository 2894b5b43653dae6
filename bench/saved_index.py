"""Start-up with the "hnsw" index: building the graph from the store against restoring it saved.

Fills a SQLite store with N clustered 512-d vectors (bench/query.py's data), then, in one
process, as the service does at start: loads the exact index from the store; builds the graph
from the store; saves it beside the snapshot (file size); writes the graph again as the
service does (from a forked child) and by usearch in this process, each with the longest pause
of another thread meanwhile; restores it (and applies what the store changed since: nothing
here). Prints each time and the restored graph's recall@10
against exact search.

    .venv/bin/python bench/saved_index.py [--sizes 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from query import cluster_centres, clustered_vectors

from lookalike.pipeline.builtins import HNSW_OPTIONS
from lookalike.pipeline.builtins.exact_index import ExactIndex
from lookalike.pipeline.builtins.hnsw_index import HnswIndex
from lookalike.search.follow import FollowedIndex
from lookalike.search.saved import saved_paths
from lookalike.store.store import ROOT_KEY, ImageRow, Store

MODEL = "bench"


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def graph() -> HnswIndex:
    return HnswIndex(HNSW_OPTIONS["connectivity"], HNSW_OPTIONS["expansion_add"],
                     HNSW_OPTIONS["expansion_search"])


def save_graph(hnsw: HnswIndex, path: Path, forked: bool) -> None:
    """The graph written as the service writes it (forked), or by usearch in this process."""
    if forked:
        hnsw.save(path)
    else:
        hnsw._graph.save(str(path))  # the library's own write, as the plugin made it before


def longest_pause(work, *args) -> tuple[float, float]:
    """Seconds ``work(*args)`` takes, and the longest another thread of this process (waking
    every millisecond) waited meanwhile: how long the service's HTTP answers would."""
    pauses, done = [0.0], threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            pauses[0], last = max(pauses[0], now - last), now

    ticker = threading.Thread(target=tick)
    ticker.start()
    seconds, _ = timed(work, *args)
    done.set()
    ticker.join()
    return seconds, pauses[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = cluster_centres(rng)
    queries = clustered_vectors(args.queries, centres, rng)
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
            store.meta_once(ROOT_KEY, "bench")
            vectors = clustered_vectors(size, centres, rng)
            for start in range(0, size, 10_000):
                store.write_rows(ImageRow(f"{n:07d}.jpg", f"{n:064x}", 1, 1, 1, 1, MODEL,
                                          vectors[n].tobytes())
                                 for n in range(start, min(size, start + 10_000)))
            snapshot = Path(tmp) / "feature_vectors.pkl"
            loaded, exact = timed(FollowedIndex, store, MODEL, ExactIndex())
            hnsw = graph()
            built, index = timed(FollowedIndex, store, MODEL, hnsw, snapshot)
            saved, _ = timed(index.save, snapshot)
            data, _ = saved_paths(snapshot, "hnsw")
            paused = {way: longest_pause(save_graph, hnsw, Path(tmp) / "again.hnsw", forked)
                      for way, forked in (("in this process", False), ("by a forked child", True))}
            restored, again = timed(FollowedIndex, store, MODEL, graph(), snapshot)
            assert again.restored
            recall = np.mean([
                len({n.path for n in again.search(q, 10)} & {n.path for n in exact.search(q, 10)})
                / 10 for q in queries])
            print(f"N={size:>9,}  exact index loaded from the store  {loaded:7.1f} s\n"
                  f"             hnsw graph built from the store      {built:7.1f} s\n"
                  f"             saved                                {saved:7.1f} s  "
                  f"{data.stat().st_size / 2**20:,.0f} MB\n"
                  + "".join(f"             graph written {way:<18} {seconds:7.2f} s  "
                            f"(another thread's longest pause {pause:.2f} s)\n"
                            for way, (seconds, pause) in paused.items()) +
                  f"             restored and brought up to date      {restored:7.1f} s  "
                  f"({built / restored:,.0f} x faster than the build)\n"
                  f"             recall@10 of the restored graph      {recall:7.3f} "
                  f"(expansion_search {HNSW_OPTIONS['expansion_search']})", flush=True)
            store.close()


if __name__ == "__main__":
    main()
