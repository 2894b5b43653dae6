"""Query latency of the index at several catalogue sizes, side by side.

For N stored 512-d unit vectors it times one query through
  - the service's index (scikit-learn NearestNeighbors, brute-force cosine), and
  - a numpy matrix product on a preloaded float32 matrix (+ argpartition),
with the embedding excluded, then once with it included (the configured pipeline embeds a
photo, then the service's index is searched). Also: building the index, the query function's
RSS, and checks that both methods return the same neighbours.

    .venv/bin/python bench/query.py [--sizes 5000,100000,1000000] [--queries 50]
        [--config CONFIG]    # adds the embedding-included figure
"""

from __future__ import annotations

import argparse
import io
import resource
import time

import numpy as np

from lookalike.store.index import NeighbourIndex

K = 10


def percentiles(seconds: list[float]) -> str:
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
    return f"p50 {p50:8.2f} ms  p99 {p99:8.2f} ms"


def unit_vectors(count: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, 512), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def numpy_search(matrix: np.ndarray, vector: np.ndarray, k: int) -> np.ndarray:
    scores = matrix @ vector
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,100000,1000000")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    queries = unit_vectors(args.queries, rng)
    for size in (int(s) for s in args.sizes.split(",")):
        matrix = unit_vectors(size, rng)
        paths = [f"{i}.jpg" for i in range(size)]
        started = time.perf_counter()
        index = NeighbourIndex(paths, matrix, "bench")
        built = time.perf_counter() - started
        sklearn_times, numpy_times = [], []
        for vector in queries:
            started = time.perf_counter()
            found = index.search(vector, K)
            sklearn_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            rows = numpy_search(matrix, vector, K)
            numpy_times.append(time.perf_counter() - started)
            assert [paths[r] for r in rows] == [n.path for n in found]
        print(f"N={size:>9,}  index built in {built * 1000:8.1f} ms   max RSS {rss_mb():7.0f} MB")
        print(f"  sklearn brute cosine   {percentiles(sklearn_times)}")
        print(f"  numpy matmul           {percentiles(numpy_times)}")
        print(f"  numpy speed-up at p50  {np.median(sklearn_times) / np.median(numpy_times):.1f}x")
        if args.config:
            print(f"  with embedding         {with_embedding(args.config, index, args.queries)}")
        del index, matrix


def with_embedding(config: str, index: NeighbourIndex, count: int) -> str:
    """Latency of the query function: decode, remove background, pad, embed, search."""
    from PIL import Image

    from lookalike.cli.app import App
    from lookalike.store.query import answer_queries

    pipeline = App(config).pipeline
    buffer = io.BytesIO()
    Image.new("RGB", (480, 640), (200, 40, 40)).save(buffer, "JPEG")
    photo = buffer.getvalue()
    answer_queries(pipeline, index, [("warm-up.jpg", photo)], K)  # loads the models
    times = []
    for _ in range(min(count, 20)):
        started = time.perf_counter()
        answer_queries(pipeline, index, [("q.jpg", photo)], K)
        times.append(time.perf_counter() - started)
    return percentiles(times)


if __name__ == "__main__":
    main()
