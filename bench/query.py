"""Query latency and add cost of the neighbour index at several catalogue sizes, side by side.

For N stored 512-d unit vectors, one query vector at a time, k = 10:
  - scikit-learn NearestNeighbors, brute-force cosine (the baseline),
  - the "exact" index plugin (a float32 scan, then an int8 scan ranked by float32),
  - the "hnsw" index plugin (usearch) at one or more search widths,
each with its recall@10 against the true top 10 (float32 scores of every vector),
p50 and p99 with the embedding excluded (and per query when 8 are asked at once), then,
given --config, the query function with the embedding included. Also the cost of adding
one image and a burst of 1,000 (in the service's batches of 16) to an index that already
holds N.

The vectors are clustered, like image embeddings (2,000 centres, wide spread, non-negative
like ResNet features after ReLU), not uniform noise, for which no index beats a full scan.

    .venv/bin/python bench/query.py [--sizes 5000,100000,1000000] [--queries 200]
        [--indexes exact,hnsw] [--widths 256,512] [--config CONFIG]
"""

from __future__ import annotations

import argparse
import io
import resource
import time
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

from lookalike.models.files import ModelSource
from lookalike.models.onnx import OnnxRuntime
from lookalike.pipeline.builtins import HNSW_OPTIONS
from lookalike.pipeline.plugins import collect_steps, plugin_manager
from lookalike.search.index import NeighbourIndex

K = 10
DIMENSION = 512
BATCH = 16  # the service's default [daemon] batch_size
TOGETHER = 8  # queries asked at once (a CLI call with several photos, a /similar batch)


def percentiles(seconds: list[float]) -> str:
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
    return f"p50 {p50:8.2f} ms  p99 {p99:8.2f} ms"


def cluster_centres(rng: np.random.Generator) -> np.ndarray:
    """2,000 centres the clustered vectors gather around (garments of a kind look alike)."""
    return np.abs(rng.standard_normal((2000, DIMENSION), dtype=np.float32)) ** 2


def clustered_vectors(count: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    vectors = np.empty((count, DIMENSION), dtype=np.float32)
    for start in range(0, count, 100_000):  # in chunks: the noise would double peak memory
        rows = min(100_000, count - start)
        chosen = centres[rng.integers(0, len(centres), rows)]
        noise = rng.standard_normal((rows, DIMENSION), dtype=np.float32)
        chunk = np.maximum(chosen + 3.0 * chosen.mean() * noise, 0.0)
        vectors[start:start + rows] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return vectors


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(function, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--indexes", default="exact,hnsw")
    parser.add_argument("--widths", default=str(HNSW_OPTIONS["expansion_search"]),
                        help="hnsw search widths (expansion_search) to measure, one graph")
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    indexes = collect_steps(plugin_manager())["index"]
    rng = np.random.default_rng(0)
    centres = cluster_centres(rng)
    queries = clustered_vectors(args.queries, centres, rng)
    arrivals = clustered_vectors(1001, centres, rng)
    for size in (int(s) for s in args.sizes.split(",")):
        matrix = clustered_vectors(size, centres, rng)
        paths = [f"{i}.jpg" for i in range(size)]
        print(f"N={size:>9,}")
        # scikit-learn takes seconds a query at a million: a few queries tell its p50.
        sklearn = NearestNeighbors(metric="cosine", algorithm="brute").fit(matrix)
        times = [timed(sklearn.kneighbors, q.reshape(1, -1), K)[0]
                 for q in queries[: max(5, args.queries // (1 + size // 50_000))]]
        print(f"  {'sklearn brute cosine':<24} {percentiles(times)}")
        del sklearn
        # The true top 10 of each query, by float32 scores of every vector.
        truth = [{paths[i] for i in np.argpartition(-column, K)[:K]}
                 for column in (matrix @ queries.T).T]
        for name in args.indexes.split(","):
            # as the service builds it
            vectors = indexes[name].build({}, Path.cwd(), ModelSource(), OnnxRuntime())
            index = NeighbourIndex("bench", vectors)
            built, _ = timed(index.load, paths, matrix.copy())  # handed over to the index
            print(f"  {name + ' index':<24} built in {built:7.2f} s")
            widths = [int(w) for w in args.widths.split(",")] if name == "hnsw" else [None]
            for width in widths:
                if width:
                    vectors.expansion_search = width
                times, answers = [], []
                for q in queries:
                    seconds, found = timed(index.search, q, K)
                    times.append(seconds)
                    answers.append({n.path for n in found})
                together = [timed(index.search_many, queries[i:i + TOGETHER], K)[0] / TOGETHER
                            for i in range(0, len(queries) - TOGETHER + 1, TOGETHER)]
                label = f"  search ef={width}" if width else "  search"
                line = (f"  {label:<24} {percentiles(times)}   {TOGETHER} at once: "
                        f"{np.median(together) * 1000:6.2f} ms a query")
                pairs = zip(answers, truth, strict=True)
                line += f"  recall@10 {np.mean([len(a & e) / K for a, e in pairs]):.4f}"
                print(line)
            one, _ = timed(index.update, {"arrival.jpg": arrivals[0]})
            burst = sum(timed(index.update, {f"a{i + j}.jpg": arrivals[i + j]
                                             for j in range(min(BATCH, 1000 - i))})[0]
                        for i in range(0, 1000, BATCH))
            print(f"  {'':<24} add one {one * 1000:7.2f} ms   add 1,000 {burst * 1000:8.1f} ms"
                  f"   max RSS {rss_mb():6.0f} MB")
            if args.config:
                print(f"  {'with embedding':<24} {with_embedding(args.config, index)}")
            del index
        del matrix


def with_embedding(config: str, index: NeighbourIndex) -> str:
    """Latency of the query function: decode, remove background, pad, embed, search."""
    from PIL import Image

    from lookalike.api.app import App
    from lookalike.search.query import answer_queries

    pipeline = App(config).pipeline
    buffer = io.BytesIO()
    Image.new("RGB", (480, 640), (200, 40, 40)).save(buffer, "JPEG")
    photo = buffer.getvalue()
    answer_queries(pipeline, index, [("warm-up.jpg", photo)], K)  # loads the models
    times = [timed(answer_queries, pipeline, index, [("q.jpg", photo)], K)[0] for _ in range(20)]
    return percentiles(times)


if __name__ == "__main__":
    main()
