"""Decoder "pillow": Pillow decode with the EXIF orientation applied.

Images larger than ``max_pixels`` are refused from their header, before any pixel is decoded,
so a decompression bomb costs nothing. A JPEG much larger than the pipeline needs is decoded
at 1/2, 1/4 or 1/8 scale by libjpeg itself (a 12-megapixel photo several times faster).
"""

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..hookspecs import hookimpl

SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class PillowDecoder:
    id = "pillow@2"  # 2: reduced-scale JPEG decoding

    def __init__(self, max_pixels: int):
        self.max_pixels = max_pixels

    def decode(self, data: bytes, min_side: int) -> Image.Image:
        try:
            with warnings.catch_warnings():
                # Our own limit below replaces Pillow's warning for large images.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as image:
                    self._check_size(image.size)
                    full_size = image.size
                    image.draft(None, (min_side, min_side))  # JPEG only; others ignore it
                    image.load()
                    stored_size = image.size
                    ImageOps.exif_transpose(image, in_place=True)
                    if image.size != stored_size:  # turned by 90 degrees
                        full_size = full_size[::-1]
                    oriented = image
        except UnidentifiedImageError:
            raise ImageError("not an image Pillow can read") from None
        except Image.DecompressionBombError as exc:
            raise ImageError(f"refused: {exc}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(f"cannot decode image: {exc}") from None
        decoded = _to_rgb_or_rgba(oriented)
        if decoded.size != full_size:
            decoded.info["full_size"] = full_size
        return decoded

    def _check_size(self, size: tuple[int, int]) -> None:
        width, height = size
        if width * height > self.max_pixels:
            raise ImageError(
                f"refused: {width}x{height} pixels is more than [pillow] max_pixels "
                f"({self.max_pixels})"
            )


def _to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in SIXTEEN_BIT_MODES:
        # 16-bit greyscale: scale to 8 bits rather than clipping everything to white.
        image = image.point(lambda value: value / 256).convert("L")
    keep_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info
    return image.convert("RGBA" if keep_alpha else "RGB")


@hookimpl
def register_decoders(register):
    register(
        "pillow",
        lambda settings: PillowDecoder(settings.options["max_pixels"]),
        {"max_pixels": 64_000_000},
    )
