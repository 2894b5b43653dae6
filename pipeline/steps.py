"""The step kinds of the pipeline and what each must provide."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from .errors import ConfigError, ModelMissingError

# The steps that turn bytes into a vector, in order; their ids make the model id.
VECTOR_STEP_KINDS = ("decoder", "remover", "padder", "embedder")
# Every kind a plugin can offer: the index finds neighbours among the vectors.
STEP_KINDS = (*VECTOR_STEP_KINDS, "index")


@dataclass(frozen=True)
class ModelSource:
    """Where missing model files come from (config.toml's [models] table): upstream or
    ``mirror`` (``<mirror><file name>``), never when ``fetch`` is off; ``dir`` holds files
    carried in by hand and is looked in first."""

    mirror: str = ""
    fetch: bool = True
    dir: Path | None = None
    timeout_seconds: float = 60.0
    cache_dir: Path = field(default_factory=lambda: Path(
        os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "lookalike" / "models")

    def place(self, name: str, default: Path) -> Path:
        """Where the file called ``name`` is loaded from: ``dir`` when it is there, else
        ``default`` (where a fetch puts it)."""
        if self.dir is not None and (self.dir / name).is_file():
            return self.dir / name
        return default


@dataclass(frozen=True)
class StepSettings:
    """A step's config table (defaults filled in), the folder relative paths start from, and
    where its model files come from."""

    options: dict[str, Any]
    base_dir: Path
    models: ModelSource = ModelSource()

    def path(self, key: str) -> Path | None:
        """The option ``key`` as a path, relative to the config file; None when empty."""
        value = self.options[key]
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def model_file(self, key: str, step: str, how_to_supply: str) -> ModelFile | None:
        """The option ``key`` as a model file: a path, or an http(s) URL fetched once into the
        cache, checked against the sha256 in ``<key>_sha256``; None when empty."""
        value = self.options[key]
        if not value:
            return None
        if not is_url(value):
            return ModelFile(step, self.path(key), how_to_supply, source=self.models)
        digest = self.options.get(f"{key}_sha256", "")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"{step}.{key} is a URL: {step}.{key}_sha256 must be its sha256 "
                              "(64 hex digits)")
        name = PurePosixPath(urlsplit(value).path).name
        default = self.models.cache_dir / digest[:16] / name  # equal names, other contents
        return ModelFile(step, self.models.place(name, default), how_to_supply, url=value,
                         pin=f"sha256:{digest}", source=self.models)


def is_url(value: str) -> bool:
    return urlsplit(value).scheme in ("http", "https", "file")


@dataclass(frozen=True)
class ModelFile:
    """A file a step loads: where it is loaded from, how a user supplies it, and, when it can
    be fetched, its URL and the digest it must have (``md5:<hex>``, or ``sha256:<hex>`` of
    at least 8 digits: upstream's prefix or the whole digest)."""

    step: str
    path: Path
    how_to_supply: str
    url: str | None = None
    pin: str | None = None
    source: ModelSource = ModelSource()

    @property
    def present(self) -> bool:
        return self.path.is_file()

    def sha256(self) -> str:
        return file_digest(self.path, "sha256")

    def matches_pin(self) -> bool | None:
        """Whether the file on disk has the pinned digest; None when nothing is pinned."""
        if self.pin is None:
            return None
        algorithm, expected = self.pin.split(":")
        return file_digest(self.path, algorithm).startswith(expected)

    def required(self, what: str) -> ModelFile:
        """This file, verified; fetched first when it is missing and may be. Otherwise
        ModelMissingError naming ``what``, where it belongs and how to get it."""
        if not self.present and self.url is not None and self.source.fetch:
            from .fetch import fetch

            fetch(self)
        if not self.present:
            raise ModelMissingError(f"{what} not found at {self.path}: {self.how_to_supply}")
        if self.matches_pin() is False:
            raise ModelMissingError(f"{what} at {self.path} does not have the pinned digest "
                                    f"{self.pin}: delete it to fetch it again")
        return self


def file_digest(path: Path, algorithm: str) -> str:
    """The file's digest, computed once while its size and mtime stay the same: a start checks
    the pin and makes the model id from the same file (a 168 MB u2net is not read twice)."""
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns, algorithm)


@lru_cache(maxsize=64)
def _digest(path: Path, size: int, mtime_ns: int, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


class Decoder(Protocol):
    id: str

    def check(self, file: BinaryIO, size: int) -> None:
        """Raise ImageError when a file of ``size`` bytes, open at its start, is not worth
        reading whole (too large, not an image, too many pixels); read only what tells."""

    def decode(self, data: bytes, min_side: int) -> Image.Image:
        """Decode bytes to an RGB or RGBA image; raise ImageError when they are not one.

        The pipeline needs no more than ``min_side`` pixels on each side: a decoder may decode
        a reduced version down to that (a large JPEG decodes several times faster), and then
        records the full (width, height) in ``image.info["full_size"]``."""


class Remover(Protocol):
    id: str

    def model_files(self) -> list[ModelFile]: ...

    def remove(self, image: Image.Image) -> Image.Image:
        """Return the image as RGB with its background replaced by white. A remover with
        several ways records the one it took, as a step id, in the result's info["removal"]."""


class Padder(Protocol):
    id: str

    def pad(self, image: Image.Image, size: int) -> Image.Image:
        """Return a ``size`` x ``size`` RGB image."""


class Embedder(Protocol):
    dimension: int
    input_size: int

    @property
    def id(self) -> str:
        """Name and weights digest: vectors of different ids are never compared."""

    def model_files(self) -> list[ModelFile]: ...

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed square RGB images into an (n, dimension) float32 array of unit vectors."""


class VectorIndex(Protocol):
    """Nearest neighbours by cosine similarity among unit vectors stored under integer keys."""

    id: str

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` (n, d) under ``keys`` (n,), replacing what those keys held."""

    def remove(self, keys: np.ndarray) -> None:
        """Forget the vectors under ``keys`` (each of them is stored)."""

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys and cosine similarities of up to ``k`` nearest vectors, most similar first."""
