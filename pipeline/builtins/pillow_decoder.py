"""Decoder "pillow": Pillow decode with the EXIF orientation applied.

Files larger than ``max_file_bytes`` are refused before they are read, and images larger than
``max_pixels`` from their header, before any pixel is decoded, so neither a huge file nor a
decompression bomb costs anything. A JPEG much larger than the pipeline needs is decoded at
1/2, 1/4 or 1/8 scale by libjpeg itself (a 12-megapixel photo several times faster). Every
mode Pillow reads (16- and 32-bit integer, float, CMYK, LAB, palettes) becomes 8-bit RGB(A).
"""

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from lookalike.base.errors import ImageError

ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class PillowDecoder:
    id = "pillow@2"  # 2: reduced-scale JPEG decoding

    def __init__(self, max_pixels: int, max_file_bytes: int):
        self.max_pixels = max_pixels
        self.max_file_bytes = max_file_bytes
        self.limits = f"max_pixels={max_pixels}, max_file_bytes={max_file_bytes}"

    def check(self, file: BinaryIO, size: int) -> None:
        self._check_file_size(size)
        with _read_by_pillow(), Image.open(file) as image:  # reads the header only
            self._check_pixels(image.size)

    def decode(self, data: bytes, min_side: int) -> Image.Image:
        self._check_file_size(len(data))
        with _read_by_pillow(), Image.open(io.BytesIO(data)) as image:
            self._check_pixels(image.size)
            full_size = image.size
            image.draft(None, (min_side, min_side))  # JPEG only; others ignore it
            image.load()
            stored_size = image.size
            ImageOps.exif_transpose(image, in_place=True)
            if image.size != stored_size:  # turned by 90 degrees
                full_size = full_size[::-1]
            decoded = _to_rgb_or_rgba(image)
        if decoded.size != full_size:
            decoded.info["full_size"] = full_size
        return decoded

    def _check_file_size(self, size: int) -> None:
        if size > self.max_file_bytes:
            raise ImageError(f"refused: {size:,} bytes is more than [pillow] max_file_bytes "
                             f"({self.max_file_bytes:,})")

    def _check_pixels(self, size: tuple[int, int]) -> None:
        width, height = size
        if width * height > self.max_pixels:
            raise ImageError(
                f"refused: {width}x{height} pixels is more than [pillow] max_pixels "
                f"({self.max_pixels})"
            )


@contextmanager
def _read_by_pillow() -> Iterator[None]:
    """Pillow's ways of saying a file is not a readable image, as ImageErrors."""
    try:
        with warnings.catch_warnings():
            # Our own limit replaces Pillow's warning for large images.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from None


def _to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8_bits(image)
    elif image.mode == "LAB":
        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        image = ImageCms.applyTransform(
            image, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))
    keep_alpha = image.mode in ALPHA_MODES or "transparency" in image.info
    return image.convert("RGBA" if keep_alpha else "RGB")


def _to_8_bits(image: Image.Image) -> Image.Image:
    """Deep greyscale (16- or 32-bit integers, floats) scaled to 8 bits rather than clipped
    to white: by the range its values use (0-1 for floats, 8, 16 bits, or their maximum)."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), posinf=0.0, neginf=0.0)
    top = float(values.max(initial=0.0))
    full_scale = next((limit for limit in (1.0, 255.0, 65535.0) if top <= limit), top)
    if image.mode != "F" and full_scale == 1.0:
        full_scale = 255.0  # integers 0 and 1 are dark greys, not black and white
    scaled = np.clip(values * (255.0 / full_scale), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L")
