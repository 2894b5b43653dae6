"""The step kinds of the pipeline and what each must provide."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from PIL import Image

from .errors import ModelMissingError

# The steps that turn bytes into a vector, in order; their ids make the model id.
VECTOR_STEP_KINDS = ("decoder", "remover", "padder", "embedder")
# Every kind a plugin can offer: the index finds neighbours among the vectors.
STEP_KINDS = (*VECTOR_STEP_KINDS, "index")


@dataclass(frozen=True)
class StepSettings:
    """A step's config table (defaults filled in) and the folder relative paths start from."""

    options: dict[str, Any]
    base_dir: Path

    def path(self, key: str) -> Path | None:
        """The option ``key`` as a path, relative to the config file; None when empty."""
        value = self.options[key]
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path


@dataclass(frozen=True)
class ModelFile:
    """A file a step loads: where it is expected and how a user supplies it."""

    step: str
    path: Path
    how_to_supply: str

    @property
    def present(self) -> bool:
        return self.path.is_file()

    def sha256(self) -> str:
        with open(self.path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def required(self, what: str) -> ModelFile:
        """This file, or ModelMissingError naming ``what``, where it belongs and how to get it."""
        if not self.present:
            raise ModelMissingError(f"{what} not found at {self.path}: {self.how_to_supply}")
        return self


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
        """Return the image as RGB with its background replaced by white."""


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
