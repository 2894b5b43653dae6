"""Product photos with known masks: garments on plain and textured backgrounds.

The ground truth for background removal. Each scene is a garment (a drawn silhouette, or a
Fashion-MNIST item from Debian's dataset-fashion-mnist, which `make test` installs) in a
colour, a pattern or white on white, with a soft drop shadow on half the plain scenes, on one
background kind: "white", "grey", "gradient" (plain: a studio sweep) or "textured" (wood,
tiles, fabric, stone, a street). Two more kinds are plain backgrounds where a cut by colour
would guess: "panel" (a garment with a large part in the background's colour: a grey chest
panel on grey, or only a dark outline) and "fine" (fur trim, hair or leaves: hundreds of strands
a pixel or two wide, on white or light grey). Edges are anti-aliased and each photo goes
through JPEG, as a camera's would. The true mask is where the garment covers at least half a
pixel.

Beside the drawn scenes, `real_cut_outs()` gives real subjects with fine structure (fur, hair, a
succulent, cars) cut out of real photos by rembg, on white and on light grey: their true mask is
the cut-out's alpha (see cutouts/SOURCE.md).
"""

from __future__ import annotations

import gzip
import io
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from builders import draw_silhouette

KINDS = ("white", "grey", "gradient", "textured", "panel", "fine")
PLAIN_KINDS = KINDS[:3]
GUESS_KINDS = KINDS[4:]  # plain, but a cut by colour is a guess: declined or cut exactly
CUTOUTS = Path(__file__).parent / "cutouts"
CUTOUT_BACKGROUNDS = {"white": 255, "light grey": 235}
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
SIZE = (400, 500)


def scene(kind: str, seed: int, size: tuple[int, int] = SIZE) -> tuple[bytes, np.ndarray]:
    """A JPEG photo of one garment on a ``kind`` background, and its true mask (bool, h×w)."""
    rng = np.random.default_rng([KINDS.index(kind), seed])
    if kind in GUESS_KINDS:
        coverage, background, garment = GUESSES[kind](rng, size)
    else:
        coverage = garment_coverage(rng, size)
        background = BACKGROUNDS[kind](rng, size)
        if kind in PLAIN_KINDS and rng.random() < 0.5:
            background = with_shadow(background, coverage, rng)
        garment = garment_pixels(rng, size, coverage, background)
    mask = coverage >= 0.5
    alpha = coverage[..., None]
    pixels = garment * alpha + background * (1 - alpha)
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=int(rng.integers(70, 96)))
    return out.getvalue(), mask


def garment_coverage(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """How much of each pixel the garment covers (0–1), drawn at 4× and averaged down."""
    width, height = size
    big = (width * 4, height * 4)
    if rng.random() < 0.5:
        items = fashion_items()
        item = Image.fromarray(items[int(rng.integers(len(items)))])
        side = int(min(big) * rng.uniform(0.55, 0.85))
        shape = np.asarray(item.resize((side, side), Image.Resampling.BICUBIC)) > 24
        shape = Image.fromarray(without_small_holes(shape).astype(np.uint8) * 255)
        canvas = Image.new("L", big, 0)
        canvas.paste(shape, ((big[0] - side) // 2 + int(rng.integers(-40, 41)),
                             (big[1] - side) // 2 + int(rng.integers(-40, 41))))
    else:
        canvas = drawn_silhouette(rng, size, shapes=4)
    return down(canvas, size)


def drawn_silhouette(rng: np.random.Generator, size: tuple[int, int],
                     shapes: int = 3) -> Image.Image:
    """One of the first ``shapes`` drawn garments (t-shirt, trousers, dress, bag) at 4× the
    photo's size ("L", 255 inside), turned a little."""
    width, height = size
    canvas = Image.new("L", (width, height), 0)
    draw_silhouette(ImageDraw.Draw(canvas), int(rng.integers(shapes)), width // 2, height // 2)
    canvas = canvas.resize((width * 4, height * 4), Image.Resampling.NEAREST).rotate(
        float(rng.uniform(-12, 12)), Image.Resampling.BILINEAR)
    return canvas.point(lambda v: 255 if v >= 128 else 0)


def down(canvas: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A 4× drawing averaged down to the photo: how much of each pixel it covers (0–1)."""
    return np.asarray(canvas.resize(size, Image.Resampling.BOX), dtype=np.float32) / 255


def panelled(rng, size):
    """A dark garment with a large part in the background's own colour (a chest panel, a
    yoke), or a garment of the background's colour with only a dark outline: the garment's
    (coverage, background, colours)."""
    silhouette = drawn_silhouette(rng, size)
    coverage = down(silhouette, size)
    background = (grey if rng.random() < 0.6 else white)(rng, size)
    flat = background.mean(axis=(0, 1))
    dark = rng.uniform(15, 90, 3).astype(np.float32)
    height, width = coverage.shape
    if rng.random() < 0.5:  # a panel of 10–35 % of the garment in the background's colour
        inside = np.argwhere(coverage > 0.99)
        (top, left), (bottom, right) = inside.min(axis=0), inside.max(axis=0)
        share = rng.uniform(0.1, 0.35)
        panel_h = int((bottom - top) * np.sqrt(share) * rng.uniform(0.8, 1.2))
        panel_w = int((right - left) * np.sqrt(share) * rng.uniform(0.8, 1.2))
        y0 = int(rng.integers(top, max(top + 1, bottom - panel_h)))
        x0 = int(rng.integers(left, max(left + 1, right - panel_w)))
        painted = Image.new("L", (width * 4, height * 4), 0)
        ImageDraw.Draw(painted).rectangle([x0 * 4, y0 * 4, (x0 + panel_w) * 4,
                                           (y0 + panel_h) * 4], fill=255)
        panel = down(Image.fromarray(np.minimum(np.asarray(painted), np.asarray(silhouette))),
                     size)[..., None]
        colours = dark * (1 - panel) + (flat + rng.uniform(-3, 3, 3)) * panel
    else:  # the background's colour inside, a dark outline 2–5 pixels wide
        # A square erosion (as PIL's MinFilter, edges repeated), separable: 40x faster.
        inner = ndimage.minimum_filter(np.asarray(silhouette),
                                       size=4 * int(rng.integers(2, 6)) + 1, mode="nearest")
        rim = (coverage - down(Image.fromarray(inner), size))[..., None]
        colours = (flat + rng.uniform(-3, 3, 3)) * (1 - rim) + dark * rim
    return coverage, background, np.broadcast_to(colours, (height, width, 3)).astype(np.float32)


def fine(rng, size):
    """A garment trimmed with fur (strands all round), with hair (strands on top) or leaves
    (small leaves on thin stems), on white or light grey: the garment's (coverage, background,
    colours)."""
    silhouette = drawn_silhouette(rng, size)
    edge = np.asarray(silhouette.filter(ImageFilter.FIND_EDGES)) > 0
    points = np.argwhere(edge)
    centre = points.mean(axis=0)
    style = rng.choice(["fur", "hair", "leaves"])
    if style == "hair":
        points = points[points[:, 0] < np.percentile(points[:, 0], 35)]
    draw = ImageDraw.Draw(silhouette)
    for _ in range(int(rng.integers(250, 500))):
        y, x = points[int(rng.integers(len(points)))]
        away = np.arctan2(y - centre[0], x - centre[1]) + rng.uniform(-0.7, 0.7)
        length = rng.uniform(24, 90)
        end = (x + length * np.cos(away), y + length * np.sin(away))
        draw.line([(x, y), end], fill=255, width=int(rng.integers(3, 7)))
        if style == "leaves":
            rx, ry = rng.uniform(8, 20), rng.uniform(4, 10)
            draw.ellipse([end[0] - rx, end[1] - ry, end[0] + rx, end[1] + ry], fill=255)
    coverage = down(silhouette, size)
    background = white(rng, size) if rng.random() < 0.5 else np.clip(
        white(rng, size) - rng.uniform(15, 45), 0, 255)
    colour = rng.uniform(20, 200, 3).astype(np.float32)
    height, width = coverage.shape
    shade = 1 + 0.08 * value_noise(rng, size, 30)[..., None]
    return coverage, background, np.broadcast_to(colour, (height, width, 3)) * shade


def without_small_holes(shape: np.ndarray) -> np.ndarray:
    """The item with its dark specks filled: holes under 2 % of its area are not a design's
    (Fashion-MNIST marks dark cloth as dark, not as absent)."""
    holes, count = ndimage.label(~shape)
    sizes = np.bincount(holes.ravel())
    small = sizes < 0.02 * shape.sum()
    small[holes[0, 0]] = False  # the outside
    return shape | small[holes]


def garment_pixels(rng, size, coverage, background) -> np.ndarray:
    """The garment's colours: plain, striped or dotted, or white on white; lit with folds."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    style = rng.choice(["plain", "stripes", "dots", "white"], p=[0.35, 0.2, 0.2, 0.25])
    if style == "white":  # off-white, darker towards its outline as real cloth is
        base = np.array([236, 236, 233], np.float32) - rng.uniform(0, 10)
        rim = Image.fromarray((coverage * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(3))
        inside = np.asarray(rim, np.float32) / 255
        colours = base * (0.86 + 0.14 * inside)[..., None] * np.ones((height, width, 1))
    else:
        base = rng.uniform(10, 230, 3).astype(np.float32)
        colours = np.broadcast_to(base, (height, width, 3)).copy()
        accent = 255 - base
        period = float(rng.uniform(12, 30))
        if style == "stripes":
            colours[((x + y * 0.4) % period) < period / 3] = accent
        elif style == "dots":
            colours[((x % period - period / 2) ** 2 + (y % period - period / 2) ** 2)
                    < (period / 5) ** 2] = accent
    folds = 1 - 0.06 * (1 + np.sin(x / rng.uniform(15, 40) + rng.uniform(0, 6)))[..., None] / 2
    return colours * folds


def with_shadow(background, coverage, rng) -> np.ndarray:
    """A soft drop shadow of the garment, offset down and to one side."""
    shape = Image.fromarray((coverage * 255).astype(np.uint8))
    dx, dy = int(rng.integers(-12, 13)), int(rng.integers(6, 16))
    shifted = Image.new("L", shape.size, 0)
    shifted.paste(shape, (dx, dy))
    blur = min(shape.size) * rng.uniform(0.03, 0.05)
    shadow = np.asarray(shifted.filter(ImageFilter.GaussianBlur(blur)), np.float32) / 255
    return background * (1 - rng.uniform(0.1, 0.3) * shadow)[..., None]


def _noise(rng, size, sigma=1.5) -> np.ndarray:
    width, height = size
    return rng.normal(0, sigma, (height, width, 1)).astype(np.float32)


def white(rng, size) -> np.ndarray:
    level = rng.uniform(246, 255)
    return np.full((size[1], size[0], 3), level, np.float32) + _noise(rng, size)


def grey(rng, size) -> np.ndarray:
    colour = rng.uniform(150, 215) + rng.uniform(-6, 6, 3)
    return np.broadcast_to(colour, (size[1], size[0], 3)).astype(np.float32) + _noise(rng, size)


def gradient(rng, size) -> np.ndarray:
    """A studio sweep: light to darker, straight or round (a vignette)."""
    width, height = size
    y, x = np.mgrid[-1:1:height * 1j, -1:1:width * 1j]
    ramp = (x * x + y * y) / 2 if rng.random() < 0.4 else (y + 1) / 2
    top, bottom = rng.uniform(215, 252), rng.uniform(160, 215)
    tint = rng.uniform(-5, 5, 3)
    pixels = top + (bottom - top) * ramp[..., None] + tint
    return pixels.astype(np.float32) + _noise(rng, size)


def textured(rng, size) -> np.ndarray:
    return TEXTURES[int(rng.integers(len(TEXTURES)))](rng, size)


def value_noise(rng, size, cells: int) -> np.ndarray:
    """Smooth random variation with about ``cells`` blobs across (-1 to 1)."""
    width, height = size
    grid = rng.uniform(0, 255, (max(2, cells * height // width), cells)).astype(np.uint8)
    smooth = Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC)
    return np.asarray(smooth, np.float32) / 127.5 - 1


def stone(rng, size) -> np.ndarray:
    base = rng.uniform(90, 200, 3)
    detail = sum(value_noise(rng, size, cells) / i for i, cells in enumerate((6, 20, 60), 1))
    return base + rng.uniform(18, 40) * detail[..., None] + _noise(rng, size, 4)


def wood(rng, size) -> np.ndarray:
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    warp = 25 * value_noise(rng, size, 4)
    grain = np.sin((x + warp) / rng.uniform(3, 8)) + 0.5 * value_noise(rng, size, 40)
    base = np.array([150, 105, 60]) * rng.uniform(0.7, 1.3)
    boards = (y // rng.uniform(40, 90) % 2)[..., None] * rng.uniform(-25, 25)
    return base + rng.uniform(15, 30) * grain[..., None] + boards + _noise(rng, size, 3)


def tiles(rng, size) -> np.ndarray:
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    step = rng.uniform(25, 70)
    grout = ((x % step) < 3) | ((y % step) < 3)
    tile = rng.uniform(120, 235, 3)
    pixels = np.broadcast_to(tile, (height, width, 3)).astype(np.float32).copy()
    pixels[grout] *= rng.uniform(0.4, 0.7)
    return pixels + 8 * value_noise(rng, size, 15)[..., None] + _noise(rng, size, 2)


def fabric(rng, size) -> np.ndarray:
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(3, 7)
    weave = np.sign(np.sin(x * np.pi / period)) * np.sign(np.sin(y * np.pi / period))
    base = rng.uniform(60, 210, 3)
    return base + rng.uniform(10, 25) * weave[..., None] + _noise(rng, size, 3)


def street(rng, size) -> np.ndarray:
    """Blocks of colour (walls, windows, pavement), some sharp, some blurred."""
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.uniform(60, 200, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(12, 30))):
        x0, y0 = rng.uniform(-50, width), rng.uniform(-50, height)
        x1, y1 = x0 + rng.uniform(20, 200), y0 + rng.uniform(20, 200)
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 2.5)))
    return np.asarray(image, np.float32) + _noise(rng, size, 3)


TEXTURES = (stone, wood, tiles, fabric, street)
BACKGROUNDS = {"white": white, "grey": grey, "gradient": gradient, "textured": textured}
GUESSES = {"panel": panelled, "fine": fine}


@cache
def fashion_items() -> np.ndarray:
    """Fashion-MNIST's 10,000 test items (28×28, garment bright on black)."""
    if not FASHION_MNIST.is_file():
        raise FileNotFoundError(f"{FASHION_MNIST} is missing: `make datasets` installs "
                                "Debian's dataset-fashion-mnist")
    with gzip.open(FASHION_MNIST) as file:
        data = file.read()
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)


def real_cut_outs() -> list[tuple[str, bytes, np.ndarray]]:
    """Each real cut-out on each of CUTOUT_BACKGROUNDS: (its name, a JPEG photo, its true mask:
    where its alpha is at least half)."""
    photos = []
    for path in sorted(CUTOUTS.glob("*.png")):
        subject = Image.open(path)
        alpha = subject.getchannel("A")
        for background, level in CUTOUT_BACKGROUNDS.items():
            photo = Image.new("RGB", subject.size, (level, level, level))
            photo.paste(subject, mask=alpha)
            out = io.BytesIO()
            photo.save(out, "JPEG", quality=90)
            photos.append((f"{path.stem} on {background}", out.getvalue(),
                           np.asarray(alpha) >= 128))
    return photos


def iou(found: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks."""
    union = (found | truth).sum()
    return float((found & truth).sum() / union) if union else 1.0
