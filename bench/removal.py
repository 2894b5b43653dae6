"""Background removal at its real cost: U²-Net and u2netp as the paper describes them.

rembg's u2net weights cannot be downloaded here, and a model's cost does not depend on its
weights: this builds both networks from the U²-Net paper's description (RSU blocks of heights
7, 6, 5, 4 and the dilated 4F, the published channel widths, six side outputs fused by a 1×1
convolution), with seeded random weights, exports each once to ONNX at rembg's 320×320 input,
and times it through lookalike's own rembg remover (rembg's session, pre- and post-processing)
beside ResNet-18. Then the whole default pipeline (ingest: read, hash, decode, remove, pad,
embed, store) with u2net on every image against the same pipeline without removal.

    .venv/bin/python bench/removal.py --config CONFIG [--images 48] [--batch 16]

CONFIG names the ResNet-18 weights (and is otherwise the service's); the exports are cached in
--models (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from embed import ingest_rate, photos
from torch import nn
from torch.nn import functional as F

from lookalike.cli.app import App
from lookalike.pipeline.pipeline import Pipeline

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


def bare_session(path: Path) -> float:
    """Milliseconds of one 320×320 image through ONNX Runtime alone, as rembg opens it."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), onnxruntime.SessionOptions(),
                                           providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).random((1, 3, SIDE, SIDE), dtype=np.float32)
    return per_image(lambda _: session.run(None, {"input.1": pixels}), [None] * 5)


def with_remover(app: App, model_path: Path | None) -> Pipeline:
    """The configured pipeline, with rembg over ``model_path`` (or no removal when None)."""
    config = app.config
    chosen = {**config.pipeline, "remover": "rembg" if model_path else "none"}
    tables = {**config.tables, "rembg": {"model_path": str(model_path or "")}}
    pipeline = Pipeline.build(app.steps, chosen, tables, config.base_dir, app.models)
    pipeline.warm_up()
    return pipeline


def per_image(call, items: list) -> float:
    """Milliseconds per item of ``call``, after one warm-up call."""
    call(items[0])
    started = time.perf_counter()
    for item in items:
        call(item)
    return (time.perf_counter() - started) / len(items) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--models", help="folder for the ONNX exports (kept between runs)")
    args = parser.parse_args()
    app = App(args.config)
    print(f"{os.cpu_count()} cores, {args.images} images of 480x640, batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(args.models or tmp)
        models.mkdir(parents=True, exist_ok=True)
        folder = Path(tmp) / "photos"
        folder.mkdir()
        names = photos(folder, args.images)
        plain = with_remover(app, None)
        decoded = [plain.decoder.decode((folder / n).read_bytes(), 224) for n in names[:12]]
        squares = [plain.padder.pad(image, 224) for image in decoded]
        embed = per_image(lambda square: plain.embed([square]), squares)
        print(f"resnet18 embedding one image: {embed:7.1f} ms")
        removal = {}
        for name, widths in (("u2netp", U2NETP), ("u2net", U2NET)):
            path, parameters = exported(name, widths, models)
            pipeline = with_remover(app, path)
            removal[name] = per_image(pipeline.remover.remove, decoded)
            print(f"{name:<7} {parameters / 1e6:5.2f} M parameters: ONNX Runtime alone "
                  f"{bare_session(path):6.1f} ms, rembg remove {removal[name]:6.1f} ms/image = "
                  f"{removal[name] / embed:4.1f}x the embedding")
        rates = {"none": ingest_rate(plain, folder, names, args.batch)}
        rates["u2net"] = ingest_rate(with_remover(app, exported("u2net", U2NET, models)[0]),
                                     folder, names, args.batch)
        for remover, rate in rates.items():
            print(f"default pipeline, remover {remover:<6}: {rate:6.2f} images/s")
        print(f"u2net on every image: {rates['none'] / rates['u2net']:.1f}x slower than without")


if __name__ == "__main__":
    main()
