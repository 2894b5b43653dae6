"""The approximate index's library: usearch (float32 and float16) against hnswlib, side by side.

bench/query.py's clustered 512-d data, N vectors, one graph each (connectivity 16, 128 / 100
candidates while adding), then at several search widths: p50 / p99 of one query at a time
(k = 10) and recall@10 against exact search. hnswlib is no longer a dependency (no wheels for
current Pythons): `pip install hnswlib` where a compiler is at hand to include it.

    .venv/bin/python bench/ann_libraries.py [--size 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from query import DIMENSION, cluster_centres, clustered_vectors
from usearch.index import Index

K = 10
WIDTHS = (64, 128, 256, 512)


def measure(label: str, build, search, queries: np.ndarray, exact: np.ndarray) -> None:
    started = time.perf_counter()
    set_width = build()
    built = time.perf_counter() - started
    for width in WIDTHS:
        set_width(width)
        seconds, found = [], []
        for query in queries:
            started = time.perf_counter()
            found.append(search(query))
            seconds.append(time.perf_counter() - started)
        recall = np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)])
        p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
        print(f"{label:<16} built in {built:6.1f} s  width {width:4d}  p50 {p50:6.2f} ms  "
              f"p99 {p99:6.2f} ms  recall@10 {recall:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = cluster_centres(rng)
    queries = clustered_vectors(args.queries, centres, rng)
    data = clustered_vectors(args.size, centres, rng)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :K]
    keys = np.arange(args.size)
    for scalar in ("f32", "f16"):
        graph = Index(ndim=DIMENSION, metric="ip", dtype=scalar, connectivity=16,
                      expansion_add=128)

        def build(graph=graph):
            graph.add(keys, data, threads=2)
            return lambda width: setattr(graph, "expansion_search", width)

        measure(f"usearch {scalar}", build, lambda q, graph=graph: graph.search(q, K).keys,
                queries, exact)
    try:
        import hnswlib
    except ImportError:
        print("hnswlib not installed: not measured")
        return
    other = hnswlib.Index(space="ip", dim=DIMENSION)

    def build_hnswlib():
        other.init_index(max_elements=args.size, M=16, ef_construction=100)
        other.set_num_threads(2)
        other.add_items(data, keys)
        return other.set_ef

    measure("hnswlib", build_hnswlib, lambda q: other.knn_query(q, K)[0][0], queries, exact)


if __name__ == "__main__":
    main()
