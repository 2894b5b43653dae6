"""Decoder "pillow": Pillow decode with the EXIF orientation applied."""

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..hookspecs import hookimpl


class PillowDecoder:
    id = "pillow"

    def decode(self, data: bytes) -> Image.Image:
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                oriented = ImageOps.exif_transpose(image)
        except UnidentifiedImageError:
            raise ImageError("not an image Pillow can read") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageError(f"cannot decode image: {exc}") from None
        keep_alpha = oriented.mode in ("RGBA", "LA", "PA") or "transparency" in oriented.info
        return oriented.convert("RGBA" if keep_alpha else "RGB")


@hookimpl
def register_decoders(register):
    register("pillow", lambda settings: PillowDecoder())
