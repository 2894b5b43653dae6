"""Embedding throughput: an embedder's two backends bare, and the service's ingest path on each.

In one run, at the same batch size: a bare forward pass on ready tensors for the torch and
the onnxruntime backend, then the real ingest path (read, hash, decode, pad, embed, store in
SQLite) on each, with remover "none", so the ratios show what the service adds around the
model and what ONNX Runtime gains over torch; and the CPU per image the ingest path spends
beside the model, which bounds that ratio when the model keeps every core busy. Then the
configured background remover's cost per image beside the embedding's; for an embedder that
reads words, a text query's latency (embedding the words, then the exact index's search
among --catalogue random vectors).
Needs a config whose model files exist (--config); --embedder picks "resnet18" or "clip"
(its [clip] table from the config).

    .venv/bin/python bench/embed.py --config CONFIG [--embedder resnet18] [--images 320]
        [--batch 16] [--rounds 3] [--catalogue 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lookalike.api.app import App
from lookalike.base.cores import usable_cores
from lookalike.base.errors import LookalikeError
from lookalike.daemon.ingest import ingest
from lookalike.models.onnx import BACKENDS
from lookalike.pipeline.builtins.exact_index import ExactIndex
from lookalike.pipeline.pipeline import Pipeline
from lookalike.store.nodes import joined
from lookalike.store.store import Store


def photos(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        image = Image.new("RGB", (480, 640), (250, 250, 248))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        ImageDraw.Draw(image).rectangle([60 + i % 50, 80, 420, 560 - i % 70], fill=colour)
        image.save(folder / f"{i:05d}.jpg", quality=90)
        names.append(f"{i:05d}.jpg")
    return names


def pipeline_with(app: App, embedder: str, remover: str, backend: str) -> Pipeline:
    config = app.config
    tables = {**config.tables, embedder: {**config.tables.get(embedder, {}),
                                          "backend": backend}}
    pipeline = Pipeline.build(app.steps, replace(config.pipeline, remover=remover,
                                                 embedder=embedder),
                              tables, config.base_dir, app.models, config.onnxruntime)
    pipeline.warm_up()
    return pipeline


def bare_forward(pipeline: Pipeline, count: int, batch: int) -> float:
    """Images per second of the backend alone, on one ready (batch, 3, side, side) tensor."""
    backend = pipeline.embedder._backend  # the model itself, without the embedder around it
    side = pipeline.embedder.input_size
    pixels = np.random.default_rng(0).standard_normal((batch, 3, side, side), dtype=np.float32)
    backend.images(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(count // batch):
        backend.images(pixels)
    return (count // batch) * batch / (time.perf_counter() - started)


def ingest_rate(pipeline: Pipeline, folder: Path, names: list[str],
                batch: int) -> tuple[float, dict[str, int]]:
    """Images embedded per second into a new store, and how many took each removal way."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        started = time.perf_counter()
        with joined(store, "index", pipeline.model_id) as node:
            report = ingest(store, pipeline, folder, node, names, batch)
        rate = report.embedded / (time.perf_counter() - started)
        removals = store.tallies().removals
        store.close()
    return rate, removals


def preparation_cpu(pipeline: Pipeline, folder: Path, names: list[str], batch: int) -> float:
    """CPU seconds per image that the ingest path spends outside the model: decoding, padding
    and turning squares into the model's input (the remover being "none")."""
    data = [(folder / name).read_bytes() for name in names]
    started = time.process_time()
    squares = [pipeline.prepare(item).square for item in data]
    for start in range(0, len(squares), batch):
        pipeline.embedder.pixels(squares[start:start + batch])
    return (time.process_time() - started) / len(names)


def removal_cost(app: App, embedder: str, folder: Path,
                 names: list[str]) -> tuple[str, float, float]:
    """Seconds per image of the configured remover, and of embedding one image alone."""
    pipeline = pipeline_with(app, embedder, app.config.pipeline.remover, BACKENDS[0])
    side = pipeline.embedder.input_size
    images = [pipeline.decoder.decode((folder / name).read_bytes(), side)
              for name in names[:20]]
    started = time.perf_counter()
    removed = [pipeline.remover.remove(image) for image in images]
    remove = (time.perf_counter() - started) / len(images)
    squares = [pipeline.padder.pad(image, side, pipeline.resample) for image in removed]
    started = time.perf_counter()
    for square in squares:
        pipeline.embed([square])
    return pipeline.remover.id, remove, (time.perf_counter() - started) / len(squares)


WORDS = ["red floral summer dress", "black leather ankle boots", "striped cotton shirt",
         "denim jacket with buttons", "white sneakers", "green silk scarf"]


def text_query_latency(pipeline: Pipeline, catalogue: int, rounds: int) -> tuple[float, float]:
    """Median milliseconds of embedding one text query, and of that plus the exact index's
    search for its 10 nearest among ``catalogue`` random unit vectors."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((catalogue, pipeline.dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ExactIndex()
    index.add(np.arange(catalogue, dtype=np.int64), vectors)
    pipeline.embed_text(WORDS[:1])  # warm-up: the text tower's session
    embedding, answering = [], []
    for _ in range(rounds):
        for words in WORDS:
            started = time.perf_counter()
            query = pipeline.embed_text([words])
            embedded = time.perf_counter()
            index.search(query, 10)
            embedding.append(embedded - started)
            answering.append(time.perf_counter() - started)
    return statistics.median(embedding) * 1000, statistics.median(answering) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--embedder", default="resnet18")
    parser.add_argument("--catalogue", type=int, default=100_000)
    args = parser.parse_args()
    app = App(args.config)
    print(f"{args.embedder}: {os.cpu_count()} cores, batch {args.batch}, {args.images} images "
          f"of 480x640, medians of {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names = photos(folder, args.images)
        pipelines = {backend: pipeline_with(app, args.embedder, "none", backend)
                     for backend in BACKENDS}
        runs: dict[str, list[tuple[float, float]]] = {backend: [] for backend in BACKENDS}
        for _ in range(args.rounds):  # alternating, so each sees the same moments of the machine
            for backend, pipeline in pipelines.items():
                runs[backend].append((bare_forward(pipeline, args.images, args.batch),
                                      ingest_rate(pipeline, folder, names, args.batch)[0]))
        bare, path = {}, {}
        for backend in BACKENDS:
            bare[backend] = statistics.median(rate for rate, _ in runs[backend])
            path[backend] = statistics.median(rate for _, rate in runs[backend])
            ratios = ", ".join(f"{ingested / alone:.2f}" for alone, ingested in runs[backend])
            print(f"{backend:<12} bare forward {bare[backend]:6.1f} images/s   ingest path "
                  f"{path[backend]:6.1f} images/s   ratio {path[backend] / bare[backend]:.2f}"
                  f"  (target >= 0.9; each round {ratios})")
        # The model keeps every core busy, so the work beside it comes out of its time: the
        # ratio cannot pass model CPU / (model CPU + that work) per image.
        cores = usable_cores()
        for backend, pipeline in pipelines.items():
            beside = preparation_cpu(pipeline, folder, names, args.batch)
            model = cores / bare[backend]
            print(f"{backend:<12} CPU per image: the model {model * 1000:.1f} ms ({cores} "
                  f"cores), decoding, padding and its input beside it {beside * 1000:.2f} ms: "
                  f"the ratio's ceiling {model / (model + beside):.2f}")
        speed_up = bare["onnxruntime"] / bare["torch"]
        print(f"onnxruntime / torch: bare {speed_up:.2f}x, "
              f"ingest path {path['onnxruntime'] / path['torch']:.2f}x  (target >= 1.5x)")
        remover, remove, embed = removal_cost(app, args.embedder, folder, names)
        print(f"background removal ({remover}) {remove * 1000:.1f} ms/image, "
              f"embedding one image {embed * 1000:.1f} ms")
        for backend, pipeline in pipelines.items():
            if not pipeline.reads_text:
                continue
            try:
                words, answer = text_query_latency(pipeline, args.catalogue, args.rounds)
            except LookalikeError as exc:  # a tokenizer that cannot be loaded here
                print(f"{backend:<12} text query: {exc}")
                continue
            print(f"{backend:<12} text query: embedding the words {words:.1f} ms, "
                  f"answered among {args.catalogue:,} images {answer:.1f} ms")


if __name__ == "__main__":
    main()
