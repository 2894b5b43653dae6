"""int8 ResNet-18 on ONNX Runtime: its speed and its precision@10 beside float32.

Quantizes the float32 ONNX export that the "onnxruntime" backend caches (pre-processed, then
static, QDQ, per channel, calibrated on 200 catalogue images), then on Fashion-MNIST (as
bench/quality.py): images per second of both models on the same batches, precision@10 of
both, and the cosine between the float32 and int8 vector of each image. lookalike offers
int8 only if this shows it is worth its loss.

    .venv/bin/python bench/int8.py --config CONFIG [--catalogue 500] [--queries 100]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
from quality import CLASSES, add_split_options, split, write_folder

from lookalike.api.app import App
from lookalike.models.quantize import quantized
from lookalike.search.evaluate import same_category_hits

BATCH = 16


def session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(model: onnxruntime.InferenceSession, pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit vectors of every image, and images per second."""
    model.run(None, {"pixels": pixels[:BATCH]})  # warm-up
    started = time.perf_counter()
    features = np.concatenate([model.run(None, {"pixels": pixels[i:i + BATCH]})[0]
                               for i in range(0, len(pixels), BATCH)])
    rate = len(pixels) / (time.perf_counter() - started)
    return features / np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12), rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    add_split_options(parser)
    args = parser.parse_args()
    catalogue_x, catalogue_y, query_x, query_y = split(args)
    pipeline = App(args.config).pipeline
    pipeline.warm_up()  # exports the float32 model to the cache when it is not there yet
    embedder = pipeline.embedder
    float32_path = embedder.onnx_file
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        items = (write_folder(root / "c", catalogue_x, catalogue_y)
                 + write_folder(root / "q", query_x, query_y))
        folders = ["c"] * len(catalogue_x) + ["q"] * len(query_x)
        squares = [pipeline.prepare((root / folder / path).read_bytes()).square
                   for folder, (path, _) in zip(folders, items, strict=True)]
        pixels = embedder.pixels(squares)
        calibration = pixels[np.random.default_rng(0).permutation(len(catalogue_x))[:200]]
        int8_path = quantized(float32_path, root / "resnet18-int8.onnx", "pixels",
                              [calibration[i:i + BATCH] for i in range(0, 200, BATCH)])
        float32_vectors, float32_rate = run(session(float32_path), pixels)
        int8_vectors, int8_rate = run(session(int8_path), pixels)
    names = np.array(CLASSES)
    labels = names[np.concatenate([catalogue_y, query_y])]
    catalogue_size = len(catalogue_x)

    def precision(vectors: np.ndarray) -> float:
        return same_category_hits(vectors[catalogue_size:], labels[catalogue_size:], 10,
                                  vectors[:catalogue_size], labels[:catalogue_size]).mean()

    cosine = np.sum(float32_vectors * int8_vectors, axis=1)
    print(f"model {embedder.id}, {len(catalogue_x)} catalogue + {len(query_x)} query images")
    print(f"float32  {float32_rate:6.1f} images/s   precision@10 {precision(float32_vectors):.4f}")
    print(f"int8     {int8_rate:6.1f} images/s   precision@10 {precision(int8_vectors):.4f}")
    print(f"int8 / float32 speed {int8_rate / float32_rate:.2f}x; cosine(float32, int8) "
          f"min {cosine.min():.4f} mean {cosine.mean():.4f}")


if __name__ == "__main__":
    main()
