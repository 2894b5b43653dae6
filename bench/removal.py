"""Background removal at its real cost, and the fast path for plain backgrounds.

rembg's u2net weights cannot be downloaded here, and a model's cost does not depend on its
weights: this builds both networks from the U²-Net paper's description (RSU blocks of heights
7, 6, 5, 4 and the dilated 4F, the published channel widths, six side outputs fused by a 1×1
convolution), with seeded random weights, and exports each once to ONNX at rembg's 320×320
input. Then, in one run:

1. ground truth: the fast path ("plain@2") on the scenes of tests/scenes.py, per background
   kind, and on the real cut-outs of tests/cutouts: the share it cuts out itself, its mask IoU
   against the true mask, its time;
2. the network's own cost: rembg's one-at-a-time call, the session on batches, two images at
   once, and int8 (static quantisation, calibrated on scenes) beside float32;
3. the whole default pipeline (ingest: read, hash, decode, remove, pad, embed, store) on
   catalogues with 100, 90, 50 and 0 % plain backgrounds, beside u2net on every image and no
   removal; and how well batches overlap: the pipeline's rate against its slower stage alone.

    .venv/bin/python bench/removal.py --config CONFIG [--images 64] [--scenes 200]

CONFIG names the ResNet-18 weights (and is otherwise the service's); the exports are cached in
--models (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from embed import ingest_rate
from PIL import Image
from torch import nn
from torch.nn import functional as F

from lookalike.api.app import App
from lookalike.daemon.ingest import Ingester, preparing_pool
from lookalike.models.quantize import quantized
from lookalike.pipeline.builtins.plain_background import VERSION, PlainBackground
from lookalike.pipeline.pipeline import Pipeline
from lookalike.store.nodes import joined
from lookalike.store.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from scenes import KINDS, PLAIN_KINDS, iou, real_cut_outs, scene  # noqa: E402

# (height, in, mid, out) of each stage: encoder 1-6, then decoder 5d-1d, as published.
U2NET = {
    "encoder": [(7, 3, 32, 64), (6, 64, 32, 128), (5, 128, 64, 256), (4, 256, 128, 512),
                ("4F", 512, 256, 512), ("4F", 512, 256, 512)],
    "decoder": [("4F", 1024, 256, 512), (4, 1024, 128, 256), (5, 512, 64, 128),
                (6, 256, 32, 64), (7, 128, 16, 64)],
}
U2NETP = {
    "encoder": [(7, 3, 16, 64), (6, 64, 16, 64), (5, 64, 16, 64), (4, 64, 16, 64),
                ("4F", 64, 16, 64), ("4F", 64, 16, 64)],
    "decoder": [("4F", 128, 16, 64), (4, 128, 16, 64), (5, 128, 16, 64), (6, 128, 16, 64),
                (7, 128, 16, 64)],
}
SIDE = 320  # rembg's input size for the u2net family


class ConvBnRelu(nn.Sequential):
    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def upsampled_like(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=target.shape[2:], mode="bilinear", align_corners=False)


def pooled_between(blocks: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """Each block's output, the input halved by max pooling before every block but the first."""
    outputs, h = [], x
    for level, block in enumerate(blocks):
        h = block(F.max_pool2d(h, 2, 2, ceil_mode=True) if level else h)
        outputs.append(h)
    return outputs


class RSU(nn.Module):
    """Residual U-block of ``height``: a small U-Net inside each stage (pooling, then
    upsampling back), its output added to its input convolution."""

    def __init__(self, height: int, cin: int, mid: int, cout: int):
        super().__init__()
        self.conv_in = ConvBnRelu(cin, cout)
        self.down = nn.ModuleList([ConvBnRelu(cout, mid)]
                                  + [ConvBnRelu(mid, mid) for _ in range(height - 2)])
        self.bottom = ConvBnRelu(mid, mid, dilation=2)
        self.up = nn.ModuleList([ConvBnRelu(2 * mid, mid) for _ in range(height - 2)]
                                + [ConvBnRelu(2 * mid, cout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = self.conv_in(x)
        skips = pooled_between(self.down, start)
        h = self.bottom(skips[-1])
        for conv, skip in zip(self.up, reversed(skips), strict=True):
            h = conv(torch.cat([upsampled_like(h, skip), skip], 1))
        return h + start


class RSU4F(nn.Module):
    """The RSU-4 variant of the deepest stages: dilations 1, 2, 4, 8 instead of pooling."""

    def __init__(self, cin: int, mid: int, cout: int):
        super().__init__()
        self.conv_in = ConvBnRelu(cin, cout)
        self.down = nn.ModuleList([ConvBnRelu(cout, mid, 1), ConvBnRelu(mid, mid, 2),
                                   ConvBnRelu(mid, mid, 4)])
        self.bottom = ConvBnRelu(mid, mid, 8)
        self.up = nn.ModuleList([ConvBnRelu(2 * mid, mid, 4), ConvBnRelu(2 * mid, mid, 2),
                                 ConvBnRelu(2 * mid, cout, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = self.conv_in(x)
        skips, h = [], start
        for conv in self.down:
            h = conv(h)
            skips.append(h)
        h = self.bottom(h)
        for conv, skip in zip(self.up, reversed(skips), strict=True):
            h = conv(torch.cat([h, skip], 1))
        return h + start


def stage(height, cin: int, mid: int, cout: int) -> nn.Module:
    return RSU4F(cin, mid, cout) if height == "4F" else RSU(height, cin, mid, cout)


class U2Net(nn.Module):
    """Six encoder stages, five decoder stages, a side output per stage, their fusion."""

    def __init__(self, widths: dict):
        super().__init__()
        self.encoder = nn.ModuleList([stage(*spec) for spec in widths["encoder"]])
        self.decoder = nn.ModuleList([stage(*spec) for spec in widths["decoder"]])
        side_inputs = [spec[3] for spec in reversed(widths["decoder"])] + [
            widths["encoder"][-1][3]]
        self.sides = nn.ModuleList([nn.Conv2d(c, 1, 3, padding=1) for c in side_inputs])
        self.fuse = nn.Conv2d(len(side_inputs), 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = pooled_between(self.encoder, x)
        decoded, h = [], features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1]), strict=True):
            h = block(torch.cat([upsampled_like(h, skip), skip], 1))
            decoded.append(h)
        outputs = list(reversed(decoded)) + [features[-1]]  # stage 1d first, stage 6 last
        sides = [upsampled_like(side(o), outputs[0]) for side, o in zip(self.sides, outputs,
                                                                         strict=True)]
        fused = self.fuse(torch.cat(sides, 1))
        return tuple(torch.sigmoid(d) for d in (fused, *sides))


def exported(name: str, widths: dict, folder: Path) -> tuple[Path, int]:
    """The ONNX file of the network (made once), and its parameter count."""
    torch.manual_seed(0)
    model = U2Net(widths).eval()
    parameters = sum(p.numel() for p in model.parameters())
    path = folder / f"{name}-random.onnx"
    if not path.exists():
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter
            torch.onnx.export(model, (torch.zeros(1, 3, SIDE, SIDE),), str(path), dynamo=False,
                              input_names=["input.1"],
                              output_names=[f"d{i}" for i in range(7)], opset_version=17,
                              dynamic_axes={"input.1": {0: "batch"}})
    return path, parameters


def with_remover(app: App, remover: str, network: Path | None = None,
                 int8: bool = False) -> Pipeline:
    """The configured pipeline with ``remover``, its network the ONNX file ``network`` (its
    int8 copy with ``int8``)."""
    config = app.config
    chosen = replace(config.pipeline, remover=remover)
    table = {"model_path": str(network), "int8": int8} if network else {}
    tables = {**config.tables, remover: table}
    pipeline = Pipeline.build(app.steps, chosen, tables, config.base_dir, app.models,
                              config.onnxruntime)
    pipeline.warm_up()
    return pipeline


def per_image(call, items: list) -> float:
    """Milliseconds per item of ``call``, after one warm-up call."""
    call(items[0])
    started = time.perf_counter()
    for item in items:
        call(item)
    return (time.perf_counter() - started) / len(items) * 1000


def ground_truth(count: int) -> None:
    """The fast path on ``count`` scenes of each background kind, and on the real cut-outs."""
    plain = PlainBackground()
    print(f"fast path on {count} scenes of each kind (400x500 JPEG), then real cut-outs:")
    print("  kind      cut out   declined   IoU mean   IoU p5   IoU min   ms/image")
    real = [(data, truth) for _, data, truth in real_cut_outs()]
    for kind in (*KINDS, "real"):
        photos = real if kind == "real" else (scene(kind, seed) for seed in range(count))
        ious, seconds, number = [], 0.0, 0
        for data, truth in photos:
            photo = Image.open(io.BytesIO(data))
            photo.load()
            started = time.perf_counter()
            mask = plain.mask(photo)
            seconds += time.perf_counter() - started
            number += 1
            if mask is not None:
                ious.append(iou(np.asarray(mask) >= 128, truth))
        taken = len(ious) / number
        figures = (f"{np.mean(ious):8.3f} {np.percentile(ious, 5):8.3f} {min(ious):9.3f}"
                   if ious else f"{'-':>8} {'-':>8} {'-':>9}")
        print(f"  {kind:<9} {taken:7.1%} {1 - taken:10.1%}   {figures} "
              f"{seconds / number * 1000:10.1f}")


def network_costs(app: App, models: Path, photos: list[Image.Image]) -> float:
    """ms per image of each network one at a time (rembg's call), of u2net's session on
    batches and two at once, and of int8 u2net; returns u2net's ms per image."""
    import onnxruntime

    for name, widths in (("u2netp", U2NETP), ("u2net", U2NET)):
        path, parameters = exported(name, widths, models)
        remover = with_remover(app, "rembg", path).remover
        ms = per_image(remover.remove, photos)
        print(f"{name:<7} {parameters / 1e6:5.2f} M parameters: rembg remove, one at a time "
              f"{ms:6.1f} ms/image")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).random((8, 3, SIDE, SIDE), dtype=np.float32)
    for batch in (1, 2, 4, 8):
        session.run(None, {"input.1": pixels[:batch]})  # warm-up at this shape
        started = time.perf_counter()
        for start in range(0, 8, batch):
            session.run(None, {"input.1": pixels[start:start + batch]})
        ms_each = (time.perf_counter() - started) / 8 * 1000
        print(f"u2net session, batches of {batch}: {ms_each:6.1f} ms/image")
    with ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        list(pool.map(lambda i: session.run(None, {"input.1": pixels[i:i + 1]}), range(8)))
    print(f"u2net session, two images at once: "
          f"{(time.perf_counter() - started) / 8 * 1000:6.1f} ms/image")
    return ms


def int8_cost(models: Path, count: int) -> None:
    """int8 u2net (calibrated on 16 scenes) beside float32: speed, and mask IoU between the
    two on ``count`` scenes. With random weights the IoU says little of real masks."""
    import onnxruntime

    path = models / "u2net-random.onnx"
    int8 = models / "u2net-random-int8.onnx"

    def tensor(kind: str, seed: int) -> np.ndarray:
        photo = Image.open(io.BytesIO(scene(kind, seed)[0])).convert("RGB")
        pixels = np.asarray(photo.resize((SIDE, SIDE), Image.Resampling.LANCZOS), np.float32)
        pixels = (pixels / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
        return pixels.transpose(2, 0, 1)[None].astype(np.float32)

    if not int8.exists():
        started = time.perf_counter()
        quantized(path, int8, "input.1", [tensor(kind, seed) for kind in KINDS
                                           for seed in range(1000, 1004)])
        print(f"int8 u2net quantized in {time.perf_counter() - started:.0f} s")
    sessions = [onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for p in (path, int8)]
    inputs = [tensor(KINDS[i % 4], i) for i in range(count)]
    masks, ms = [], []
    for session in sessions:
        session.run(None, {"input.1": inputs[0]})
        started = time.perf_counter()
        masks.append([session.run(None, {"input.1": x})[0][0, 0] for x in inputs])
        ms.append((time.perf_counter() - started) / count * 1000)
    agreement = [iou(a >= np.median(a), b >= np.median(b)) for a, b in zip(*masks, strict=True)]
    print(f"u2net float32 {ms[0]:6.1f} ms/image, int8 {ms[1]:6.1f} ms/image: "
          f"{ms[0] / ms[1]:.2f}x; mask IoU int8 vs float32 mean {np.mean(agreement):.3f} "
          "(random weights)")


def catalogue(folder: Path, count: int, plain_share: float, only_cut_out=False) -> list[str]:
    """``count`` scenes, ``plain_share`` of them on plain backgrounds, the rest textured;
    ``only_cut_out``: only plain scenes the fast path cuts out itself (coloured garments)."""
    folder.mkdir()
    names, seed, plain = [], 5000, PlainBackground()
    while len(names) < count:
        seed += 1
        kind = PLAIN_KINDS[seed % 3] if len(names) < count * plain_share else "textured"
        data = scene(kind, seed)[0]
        if only_cut_out and plain.mask(Image.open(io.BytesIO(data))) is None:
            continue
        names.append(f"{len(names):05d}-{kind}.jpg")
        (folder / names[-1]).write_bytes(data)
    return names


def overlap(pipeline: Pipeline, folder: Path, names: list[str], batch: int) -> None:
    """Each stage alone (prepare on the pool; embed), and the pipeline against the slower."""
    data = [(folder / name).read_bytes() for name in names]
    with preparing_pool() as pool:
        started = time.perf_counter()
        prepared = list(pool.map(pipeline.prepare, data))
        prepare_rate = len(data) / (time.perf_counter() - started)
    squares = [item.square for item in prepared]
    started = time.perf_counter()
    for start in range(0, len(squares), batch):
        pipeline.embed(squares[start:start + batch])
    embed_rate = len(squares) / (time.perf_counter() - started)
    rate = ingest_rate(pipeline, folder, names, batch)[0]
    one_after_another = sequential_rate(pipeline, folder, names, batch)
    slower = min(prepare_rate, embed_rate)
    print(f"overlap: prepare alone {prepare_rate:6.1f}/s, embed alone {embed_rate:6.1f}/s, "
          f"pipeline {rate:6.1f}/s = {rate / slower:.2f} x the slower stage (target >= 0.9); "
          f"batches one after another {one_after_another:6.1f}/s")


def sequential_rate(pipeline: Pipeline, folder: Path, names: list[str], batch: int) -> float:
    """Images per second of ingest with no overlap: each batch finished before the next."""
    with tempfile.TemporaryDirectory() as tmp, preparing_pool() as pool:
        store = Store(f"sqlite:///{tmp}/bench.db")
        with joined(store, "index", pipeline.model_id) as node:
            ingester = Ingester(store, pipeline, folder, pool, node)
            started = time.perf_counter()
            for start in range(0, len(names), batch):
                ingester.feed(names[start:start + batch])
                ingester.flush()
            rate = len(names) / (time.perf_counter() - started)
        store.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--models", help="folder for the ONNX exports (kept between runs)")
    args = parser.parse_args()
    app = App(args.config)
    print(f"{os.cpu_count()} cores; catalogues of {args.images} scenes, batch {args.batch}")
    ground_truth(args.scenes)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(args.models or tmp)
        models.mkdir(parents=True, exist_ok=True)
        none = with_remover(app, "none")
        photos = [none.decoder.decode(scene(kind, i)[0], 224) for i, kind in
                  enumerate(KINDS * 3)]
        squares = [none.padder.pad(photo, 224, none.resample) for photo in photos]
        embed = per_image(lambda square: none.embed([square]), squares)
        print(f"resnet18 embedding one image: {embed:6.1f} ms")
        u2net = network_costs(app, models, photos)
        print(f"u2net = {u2net / embed:.1f}x the embedding")
        int8_cost(models, 24)
        network = models / "u2net-random.onnx"
        pipelines = {"none": none, "rembg": with_remover(app, "rembg", network),
                     "auto": with_remover(app, "auto", network)}
        pipelines["auto"].remover.network.quantize(photos[:16])
        pipelines["auto, int8"] = with_remover(app, "auto", network, int8=True)
        studio = Path(tmp) / "studio"
        names = catalogue(studio, args.images, 1.0, only_cut_out=True)
        print("studio catalogue of photos the fast path cuts out itself (coloured garments):")
        for remover in ("auto", "rembg", "none"):
            rate = ingest_rate(pipelines[remover], studio, names, args.batch)[0]
            print(f"  {remover:<10} {rate:6.2f} images/s")
        overlap(pipelines["auto"], studio, names, args.batch)
        for share in (1.0, 0.9, 0.5, 0.0):
            folder = Path(tmp) / f"plain-{share:.0%}"
            names = catalogue(folder, args.images, share)
            print(f"{share:4.0%} plain backgrounds (ground truth's mix, white on white too):")
            for remover in ("auto", "auto, int8") + (("rembg",) if share == 1.0 else ()):
                rate, removals = ingest_rate(pipelines[remover], folder, names, args.batch)
                taken = removals.get(f"plain@{VERSION}", 0) / len(names)
                print(f"  {remover:<10} {rate:6.2f} images/s (fast path took {taken:.0%})")
            if share == 1.0:
                overlap(pipelines["auto"], folder, names, args.batch)

if __name__ == "__main__":
    main()
