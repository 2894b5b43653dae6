"""Retrieval quality on Fashion-MNIST: the configured pipeline beside raw-pixel cosine.

5,000 training images (500 per class) become a categorised catalogue; 1,000 test images
(100 per class) are the queries. A neighbour is a hit when it has the query's class; the
script prints precision@k for both methods. Images are inverted to dark garments on white,
as product photos are.

    .venv/bin/python bench/quality.py [--config config.toml] [-k 10]

Installs Debian's dataset-fashion-mnist with apt-get when it is missing.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.api.app import App
from lookalike.search.evaluate import embed_files, same_category_hits

DATASET = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def ensure_dataset() -> None:
    if not (DATASET / "train-images-idx3-ubyte.gz").exists():
        print("installing dataset-fashion-mnist with apt-get ...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True)


def read_idx(name: str) -> np.ndarray:
    data = gzip.decompress((DATASET / name).read_bytes())
    dimensions = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dimensions)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASSES))])


def add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalogue", type=int, default=500, help="training images per class")
    parser.add_argument("--queries", type=int, default=100, help="test images per class")


def split(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Catalogue images and labels, query images and labels (installs the dataset if needed)."""
    ensure_dataset()
    train_x = read_idx("train-images-idx3-ubyte.gz")
    train_y = read_idx("train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")
    catalogue = first_per_class(train_y, args.catalogue)
    queries = first_per_class(test_y, args.queries)
    return train_x[catalogue], train_y[catalogue], test_x[queries], test_y[queries]


def write_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> list[tuple[str, str]]:
    items = []
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        path = f"{CLASSES[label]}/{i:05d}.png"
        (folder / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - pixels).save(folder / path)
        items.append((path, CLASSES[label]))
    return items


def unit_rows(pixels: np.ndarray) -> np.ndarray:
    flat = (255 - pixels).reshape(len(pixels), -1).astype(np.float32)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True).clip(min=1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("-k", type=int, default=10)
    add_split_options(parser)
    args = parser.parse_args()
    catalogue_x, catalogue_y, query_x, query_y = split(args)

    app = App(args.config)
    pipeline = app.pipeline
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalogue_items = write_folder(root / "catalogue", catalogue_x, catalogue_y)
        query_items = write_folder(root / "queries", query_x, query_y)
        started = time.perf_counter()
        catalogue = embed_files(pipeline, root / "catalogue", catalogue_items,
                                app.config.daemon.batch_size)
        queries = embed_files(pipeline, root / "queries", query_items, app.config.daemon.batch_size)
        seconds = time.perf_counter() - started
    labels = np.array([label for _, label in catalogue.kept])
    query_labels = np.array([label for _, label in queries.kept])
    model = same_category_hits(queries.vectors, query_labels, args.k, catalogue.vectors, labels)
    names = np.array(CLASSES)
    pixels = same_category_hits(unit_rows(query_x), names[query_y], args.k,
                                unit_rows(catalogue_x), names[catalogue_y])
    embedded = len(catalogue.kept) + len(queries.kept)
    print(f"model: {pipeline.model_id}")
    print(f"catalogue {len(catalogue.kept)} images, {len(queries.kept)} queries, "
          f"embedded in {seconds:.0f} s ({embedded / seconds:.1f} images/s)")
    print(f"precision@{args.k}: pipeline {model.mean():.4f}   raw-pixel cosine {pixels.mean():.4f}")
    for name in CLASSES:
        print(f"  {name:<12} pipeline {model[query_labels == name].mean():.4f}   "
              f"raw-pixel {pixels[names[query_y] == name].mean():.4f}")


if __name__ == "__main__":
    main()
