"""Which files in the watched folders are images to index, and how to list them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif",
}
ANSWER_SUFFIX = ".neighbours.json"


def is_candidate(relative: str) -> bool:
    """True for a path (relative to its watched folder) that names an image to process."""
    parts = PurePosixPath(relative).parts
    if not parts or any(part.startswith(".") for part in parts):
        return False
    name = parts[-1]
    if name.startswith("~$") or name.lower().endswith(ANSWER_SUFFIX):
        return False
    # Partial downloads (x.jpg.part, x.jpg.crdownload) fail this until renamed.
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def relative_path(root: Path, path: str | os.PathLike) -> str | None:
    """``path`` relative to ``root`` in POSIX form, or None when it is outside ``root``."""
    try:
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    except ValueError:
        return None


def regular_file_inside(root: Path, relative: str) -> os.stat_result | None:
    """The stat of ``root/relative`` when it is a regular file that resolves inside ``root``."""
    path = root / relative
    try:
        if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
            return None
        stat = path.stat()
    except OSError:
        return None
    return stat if os.path.isfile(path) else None


def scan(root: Path) -> Iterator[str]:
    """Every candidate image under ``root``, as a relative POSIX path."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            relative = relative_path(root, os.path.join(folder, name))
            if relative and is_candidate(relative):
                yield relative
