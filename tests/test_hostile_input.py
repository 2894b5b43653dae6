"""Odd and hostile files in images/: each gets a failed record or a documented skip."""

from __future__ import annotations

import io
import os
import time

import pytest
from PIL import Image

from builders import png_header_only, product_photo
from running import query_db, stored

GARMENT = product_photo(3, size=(240, 320))


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [GARMENT.convert("P"), product_photo(5, size=(240, 320)).convert("P")]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def palette_with_transparency() -> bytes:
    image = GARMENT.convert("P")
    return encoded(image, "PNG", transparency=image.getpixel((0, 0)))


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(GARMENT, "JPEG", exif=exif)


DECODABLE = {
    "animated.gif": animated_gif,
    "cmyk.jpg": lambda: encoded(GARMENT.convert("CMYK"), "JPEG"),
    "deep.png": lambda: encoded(GARMENT.convert("L").point(lambda v: v * 256).convert("I;16"),
                                "PNG"),
    "grey.jpg": lambda: encoded(GARMENT.convert("L"), "JPEG"),
    "palette.png": palette_with_transparency,
    "rotated.jpg": exif_rotated,
    "photo.webp": lambda: encoded(GARMENT, "WEBP"),
    "photo.avif": lambda: encoded(GARMENT, "AVIF"),
    "with space é 中.jpg": lambda: encoded(product_photo(6), "JPEG"),
    "new\nline.jpg": lambda: encoded(product_photo(8), "JPEG"),
    "x.jpg/inside.png": lambda: encoded(product_photo(9), "PNG"),
}

FAILING = {
    "empty.jpg": (lambda: b"", "not an image"),
    "truncated.jpg": (lambda: encoded(GARMENT, "JPEG")[:1500], "cannot decode image"),
    "random.jpg": (lambda: os.urandom(5000), "not an image"),
    "bomb.png": (lambda: png_header_only(50_000, 50_000), "refused"),
    "big.png": (lambda: png_header_only(9_000, 9_000), "more than [pillow] max_pixels"),
}

SKIPPED = [
    "notes.txt", ".DS_Store", "Thumbs.db", "x.jpg.part", "y.jpg.crdownload", "~$z.jpg",
    ".hidden.jpg", "x.neighbours.json", ".cache/inside.jpg",
]


@pytest.fixture
def hostile_folder(workspace):
    if not Image.registered_extensions().get(".avif"):
        pytest.fail("this Pillow cannot read AVIF")
    for name, make in DECODABLE.items():
        (workspace.images / name).parent.mkdir(exist_ok=True)
        (workspace.images / name).write_bytes(make())
    for name, (make, _) in FAILING.items():
        (workspace.images / name).write_bytes(make())
    for name in SKIPPED:
        (workspace.images / name).parent.mkdir(exist_ok=True)
        (workspace.images / name).write_bytes(encoded(GARMENT, "JPEG"))
    outside = workspace.root / "outside.jpg"
    outside.write_bytes(encoded(product_photo(10), "JPEG"))
    (workspace.images / "link-out.jpg").symlink_to(outside)
    return workspace


def test_every_odd_file_is_indexed_failed_or_skipped(hostile_folder, run_cli):
    started = time.monotonic()
    result = run_cli("index")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60  # the bomb was never decoded
    rows = stored(hostile_folder)
    assert {p for p, (s, _) in rows.items() if s == "indexed"} == set(DECODABLE)
    assert {p for p, (s, _) in rows.items() if s == "failed"} == set(FAILING)
    errors = dict(query_db(hostile_folder, "SELECT path, error FROM images"))
    for name, (_, message) in FAILING.items():
        assert message in errors[name], (name, errors[name])


def test_partial_download_is_indexed_once_renamed(hostile_folder, run_cli):
    run_cli("index")
    os.rename(hostile_folder.images / "x.jpg.part", hostile_folder.images / "finished.jpg")
    assert "1 embedded" in run_cli("index").output
    assert stored(hostile_folder)["finished.jpg"][0] == "indexed"


def test_exif_rotation_is_applied_before_storing_the_size(hostile_folder, run_cli):
    run_cli("index")
    sql = "SELECT width, height FROM images WHERE path = 'rotated.jpg'"
    assert query_db(hostile_folder, sql) == [(320, 240)]
