"""Embedding throughput: the service's ingest path beside a bare ResNet-18 forward pass.

Both at the same batch size, in the same run. The ingest path is the real one (read, hash,
decode, pad, embed, store in SQLite) with remover "none", so the comparison shows what the
service adds around the model. Needs a config whose ResNet-18 weights exist (--config).

    .venv/bin/python bench/embed.py --config CONFIG [--images 320] [--batch 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.models import resnet18

from lookalike.cli.app import App
from lookalike.daemon.ingest import ingest
from lookalike.pipeline.pipeline import Pipeline
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


def bare_forward(count: int, batch: int) -> float:
    model = resnet18(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    inputs = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        model(inputs)  # warm-up
        started = time.perf_counter()
        for _ in range(count // batch):
            model(inputs)
    return (count // batch) * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    app = App(args.config)
    config = app.config
    pipeline = Pipeline.build(app.steps, {**config.pipeline, "remover": "none"}, config.tables,
                              config.base_dir)
    pipeline.warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        names = photos(folder, args.images)
        store = Store(f"sqlite:///{tmp}/bench.db")
        started = time.perf_counter()
        report = ingest(store, pipeline, folder, names, args.batch)
        ingest_rate = report.embedded / (time.perf_counter() - started)
        store.close()
    bare_rate = bare_forward(args.images, args.batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.images} images of 480x640")
    print(f"bare ResNet-18 forward   {bare_rate:7.1f} images/s")
    print(f"service ingest path      {ingest_rate:7.1f} images/s")
    print(f"ratio                    {ingest_rate / bare_rate:7.2f}  (issue 4 target: >= 0.9)")


if __name__ == "__main__":
    main()
