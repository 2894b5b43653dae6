"""Padder "white": pad to a square with white, keeping the aspect ratio, then resize."""

from PIL import Image

from ..hookspecs import hookimpl
from ..imaging import WHITE


class WhitePadder:
    id = "white"

    def pad(self, image: Image.Image, size: int) -> Image.Image:
        image = image.convert("RGB")
        side = max(image.size)
        square = Image.new("RGB", (side, side), WHITE)
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        return square.resize((size, size), Image.Resampling.BILINEAR)


@hookimpl
def register_padders(register):
    register("white", lambda settings: WhitePadder())
