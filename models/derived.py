"""Files lookalike makes from a verified model file (the ONNX export of ResNet-18, int8
copies of rembg's networks): each is written with its sha256 beside it (``<name>.sha256``) and
trusted only while the two agree, as a fetched file is trusted only while it matches its pin.
An empty, truncated or replaced file is made again (or refused), never loaded."""

from __future__ import annotations

from pathlib import Path

from lookalike.base.atomic import write_atomically
from lookalike.models.files import file_digest


def digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def record_digest(path: Path) -> None:
    """Note the digest of ``path``, just made: from now on it is what ``is_sound`` expects."""
    write_atomically(digest_file(path), f"{file_digest(path, 'sha256')}\n".encode())


def is_sound(path: Path) -> bool:
    """True when ``path`` is there and still has the digest recorded when it was made."""
    try:
        recorded = digest_file(path).read_text().strip()
        return path.is_file() and file_digest(path, "sha256") == recorded
    except (OSError, UnicodeDecodeError):
        return False
