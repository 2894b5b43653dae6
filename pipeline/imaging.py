"""Small Pillow helpers shared by the built-in steps."""

from PIL import Image

WHITE = (255, 255, 255)


def on_white(image: Image.Image) -> Image.Image:
    """Flatten any transparency onto white and return an RGB image."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")
