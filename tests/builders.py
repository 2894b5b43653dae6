"""Small real models and synthetic product photos for the tests.

The real ResNet-18 and rembg weights cannot be downloaded here, so the tests write their own:
the ResNet-18 architecture with seeded random weights, and a tiny ONNX mask model that
rembg loads through its real ``u2net_custom`` session.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw


def write_resnet18_state_dict(path: Path, seed: int = 0) -> Path:
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


def write_mask_onnx(path: Path) -> Path:
    """An ONNX model with u2net's interface: (1,3,320,320) image -> (1,1,320,320) mask.

    Foreground is where the normalised pixel mean is below that of near-white.
    """
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1], keepdims=1),
            helper.make_node("Sub", ["mean", "threshold"], ["shifted"]),
            helper.make_node("Mul", ["shifted", "gain"], ["scaled"]),
            helper.make_node("Sigmoid", ["scaled"], ["mask"]),
        ],
        "mask",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
        initializer=[
            helper.make_tensor("threshold", TensorProto.FLOAT, [], [1.5]),
            helper.make_tensor("gain", TensorProto.FLOAT, [], [-8.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


PALETTE = [
    (200, 30, 40), (30, 60, 170), (20, 130, 60), (230, 170, 20), (120, 40, 140),
    (20, 20, 20), (240, 110, 150), (90, 60, 30), (0, 150, 160), (150, 150, 150),
]


def product_photo(seed: int, size: tuple[int, int] = (480, 640)) -> Image.Image:
    """A distinct synthetic garment (shape, colour, pattern) on a light background."""
    rng = random.Random(seed)
    width, height = size
    colour = PALETTE[seed % len(PALETTE)]
    garment = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(garment)
    pattern = rng.choice(["stripes", "dots", "checks", "plain"])
    accent = tuple(255 - c for c in colour)
    step = rng.randint(14, 30)
    for offset in range(0, max(size), step):
        if pattern == "stripes":
            draw.line([(0, offset), (width, offset + 80)], fill=accent, width=4)
        elif pattern == "checks":
            draw.line([(offset, 0), (offset, height)], fill=accent, width=3)
            draw.line([(0, offset), (width, offset)], fill=accent, width=3)
        elif pattern == "dots":
            for y in range(0, height, step):
                draw.ellipse([offset, y, offset + 6, y + 6], fill=accent)
    silhouette = Image.new("L", size, 0)
    draw_silhouette(ImageDraw.Draw(silhouette), seed % 4, width // 2, height // 2)
    return Image.composite(garment, Image.new("RGB", size, (250, 250, 248)), silhouette)


def marked_photo(number: int, size: tuple[int, int] = (480, 640)) -> Image.Image:
    """``product_photo(number)`` with a mark of its own on the garment, the background left
    plain: no two files alike, for lookalike reuses the vector of a copy."""
    photo = product_photo(number, size)
    x, y = size[0] // 2, size[1] // 2
    ImageDraw.Draw(photo).rectangle([x - 16, y - 16, x + 16, y + 16],
                                    fill=(number % 256, number // 256 % 256, 90))
    return photo


def draw_silhouette(draw: ImageDraw.ImageDraw, shape: int, cx: int, cy: int) -> None:
    """A t-shirt, trousers, a dress or a bag, centred at (cx, cy)."""
    if shape == 0:
        draw.rectangle([cx - 90, cy - 120, cx + 90, cy + 160], fill=255)
        for side in (-1, 1):
            draw.polygon([(cx + side * 90, cy - 120), (cx + side * 180, cy - 40),
                          (cx + side * 140, cy), (cx + side * 90, cy - 60)], fill=255)
    elif shape == 1:
        draw.rectangle([cx - 90, cy - 200, cx + 90, cy - 120], fill=255)
        for side in (-1, 1):
            draw.polygon([(cx + side * 90, cy - 120), (cx + side * 5, cy - 120),
                          (cx + side * 20, cy + 230), (cx + side * 100, cy + 230)], fill=255)
    elif shape == 2:
        draw.polygon([(cx - 50, cy - 220), (cx + 50, cy - 220), (cx + 170, cy + 220),
                      (cx - 170, cy + 220)], fill=255)
    else:
        draw.rectangle([cx - 140, cy - 60, cx + 140, cy + 150], fill=255)
        draw.arc([cx - 80, cy - 170, cx + 80, cy + 10], 180, 360, fill=255, width=18)


def cropped_query(image: Image.Image) -> Image.Image:
    """A resized, slightly cropped copy of a catalogue photo: what a shopper might upload."""
    width, height = image.size
    crop = image.crop((width * 0.05, height * 0.04, width * 0.96, height * 0.97))
    return crop.resize((int(crop.width * 0.6), int(crop.height * 0.6)))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels but carries almost no data:
    a decompression bomb as far as any decoder that trusts the header is concerned."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def odd_images() -> dict[str, bytes]:
    """Files of Pillow's rarer formats and modes, each under an image suffix the service takes
    (as misnamed files arrive): deep and float greyscale, CMYK and LAB, palettes, PSD, ICO,
    EPS (no Ghostscript here), extreme shapes. Each must be indexed or fail on its own."""
    import io
    import struct

    import numpy as np

    garment = product_photo(2, size=(48, 64))
    grey = np.asarray(garment.convert("L"), dtype=np.float64)

    def encoded(image: Image.Image, fmt: str, **params) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **params)
        return buffer.getvalue()

    def deep(mode: str, scale: float) -> Image.Image:
        values = (grey * scale).astype({"F": "<f4", "I": "<i4"}.get(mode, "<u2"))
        if mode == "I;16B":
            return Image.frombytes("I;16B", garment.size, values.astype(">u2").tobytes())
        return Image.fromarray(values, mode) if mode != "I;16" else Image.frombytes(
            "I;16", garment.size, values.tobytes())

    def float_with_nan() -> Image.Image:
        values = (grey * 4).astype("<f4")
        values[0, :5] = [np.nan, np.inf, -np.inf, -3.0, 1e30]
        return Image.fromarray(values, "F")

    def psd(depth: int) -> bytes:
        width, height = garment.size
        header = struct.pack(">4sH6xHIIHH", b"8BPS", 1, 3, height, width, depth, 3)
        planes = b"".join(garment.getchannel(c).tobytes() for c in "RGB")
        if depth == 16:
            planes = b"".join(bytes([v, 0]) for v in planes)
        return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + planes

    def palette_with_one_colour() -> Image.Image:
        image = Image.new("P", (40, 40), 0)
        image.putpalette([200, 30, 40])
        return image

    return {
        "tiff-16-bit-big-endian.tif": encoded(deep("I;16B", 256), "TIFF"),
        "tiff-16-bit.tif": encoded(deep("I;16", 256), "TIFF"),
        "tiff-32-bit.tif": encoded(deep("I", 65536), "TIFF"),
        "tiff-float-0-to-1.tif": encoded(deep("F", 1 / 255), "TIFF"),
        "tiff-float-nan.tif": encoded(float_with_nan(), "TIFF"),
        "tiff-cmyk.tif": encoded(garment.convert("CMYK"), "TIFF"),
        "tiff-lab.tif": encoded(garment.convert("LAB"), "TIFF"),
        "tiff-1-bit.tif": encoded(garment.convert("1"), "TIFF"),
        "tiff-two-pages.tif": encoded(garment, "TIFF", save_all=True,
                                      append_images=[garment.rotate(90)]),
        "png-16-bit.png": encoded(deep("I;16", 256), "PNG"),
        "png-grey-alpha.png": encoded(garment.convert("LA"), "PNG"),
        "png-1-bit.png": encoded(garment.convert("1"), "PNG"),
        "png-palette-alpha.png": encoded(garment.convert("RGBA").convert("P"), "PNG",
                                         transparency=bytes(range(0, 256, 16))),
        "png-one-colour-palette.png": encoded(palette_with_one_colour(), "PNG"),
        "psd-8-bit.png": psd(8),
        "psd-16-bit.png": psd(16),
        "ico.png": encoded(garment, "ICO"),
        "eps.jpg": encoded(garment, "EPS"),
        "bmp-1-bit.bmp": encoded(garment.convert("1"), "BMP"),
        "webp-lossless-alpha.webp": encoded(garment.convert("RGBA"), "WEBP", lossless=True),
        "one-pixel.png": encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
        "one-pixel-wide.png": encoded(Image.new("RGB", (1, 3000), (9, 90, 9)), "PNG"),
        "one-pixel-high.png": encoded(Image.new("RGB", (3000, 1), (90, 9, 9)), "PNG"),
    }
