"""Whether an index's searches run side by side on several threads, or one at a time (a library
that holds Python's GIL while it searches: the service's other threads wait meanwhile).

For each built-in index, N clustered 512-d vectors (bench/query.py's data) are added, then the
same --searches single-query searches run on one thread and split over two: the wall time of
each and the process's CPU time for the two threads. Two threads side by side take about half
the wall time of one where cores are free; one at a time, the same.

    .venv/bin/python bench/gil.py [--size 50000] [--searches 400]
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
from query import cluster_centres, clustered_vectors
from saved_index import graph

from lookalike.pipeline.builtins.exact_index import ExactIndex


def searched(index, queries: np.ndarray, threads: int) -> tuple[float, float]:
    """Wall and process CPU seconds of one search per query, on ``threads`` threads."""
    def work(part: np.ndarray) -> None:
        for query in part:
            index.search(query[np.newaxis], 11)

    workers = [threading.Thread(target=work, args=(queries[n::threads],))
               for n in range(threads)]
    wall, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--searches", type=int, default=400)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = cluster_centres(rng)
    vectors = clustered_vectors(args.size, centres, rng)
    queries = clustered_vectors(args.searches, centres, rng)
    for name, index in (("exact", ExactIndex()), ("hnsw", graph())):
        index.add(np.arange(args.size), vectors.copy())
        searched(index, queries[:20], 1)  # the exact index's int8 copy made, caches warm
        one, _ = searched(index, queries, 1)
        two, cpu = searched(index, queries, 2)
        print(f"{name:<6} {args.searches} searches of {args.size:,}: one thread {one:6.2f} s, "
              f"two threads {two:6.2f} s ({two / one:.2f} of one; CPU {cpu / two:.2f} cores)",
              flush=True)


if __name__ == "__main__":
    main()
