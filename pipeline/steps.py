"""The step kinds of the pipeline and what each must provide."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import urlsplit

from lookalike.base.errors import ConfigError
from lookalike.models.files import ModelFile, ModelSource, is_url
from lookalike.models.onnx import OnnxRuntime

if TYPE_CHECKING:  # not at run time: reading the config (`lookalike status`) needs neither
    import numpy as np
    from PIL import Image

# The steps that turn bytes into a vector, in order; their ids make the model id.
VECTOR_STEP_KINDS = ("decoder", "remover", "padder", "embedder")
# Every kind a plugin can offer: the index finds neighbours among the vectors.
STEP_KINDS = (*VECTOR_STEP_KINDS, "index")


@dataclass(frozen=True)
class StepSettings:
    """A step's config table (defaults filled in), the folder relative paths start from,
    where its model files come from, and what runs ONNX models."""

    options: dict[str, Any]
    base_dir: Path
    models: ModelSource = ModelSource()
    onnxruntime: OnnxRuntime = OnnxRuntime()

    def path(self, key: str) -> Path | None:
        """The option ``key`` as a path, relative to the config file; None when empty."""
        value = self.options[key]
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def pin(self, key: str, step: str) -> str | None:
        """The pin ``<key>_sha256`` sets for the model file of ``key`` (None when empty);
        ConfigError when it is not a sha256."""
        digest = self.options.get(f"{key}_sha256", "")
        if digest and not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"{step}.{key}_sha256 must be a sha256 (64 hex digits)")
        return f"sha256:{digest}" if digest else None

    def model_file(self, key: str, step: str, how_to_supply: str) -> ModelFile | None:
        """The option ``key`` as a model file: a path, or an http(s) URL fetched once into the
        cache, checked against the sha256 in ``<key>_sha256`` (required with a URL, checked
        with a path when given); None when empty."""
        value = self.options[key]
        if not value:
            return None
        pin = self.pin(key, step)
        if not is_url(value):
            return ModelFile(step, self.path(key), how_to_supply, source=self.models, pin=pin)
        if pin is None:
            raise ConfigError(f"{step}.{key} is a URL: {step}.{key}_sha256 must be its sha256 "
                              "(64 hex digits)")
        name = PurePosixPath(urlsplit(value).path).name
        default = self.models.cache_dir / pin.removeprefix("sha256:")[:16] / name  # same names
        return ModelFile(step, self.models.place(name, default), how_to_supply, url=value,
                         pin=pin, source=self.models)


def unit_vectors(features: np.ndarray) -> np.ndarray:
    """``features`` (n, d) as float32 rows of length one: what an embedder returns."""
    import numpy as np

    features = features.astype(np.float32, copy=False)
    return features / np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)


class Decoder(Protocol):
    id: str
    # Optional: the settings that decide which files it refuses ("max_pixels=..."); a file
    # it refused is tried again when they change.
    limits: str

    def check(self, file: BinaryIO, size: int) -> None:
        """Raise ImageError when a file of ``size`` bytes, open at its start, is not worth
        reading whole (too large, not an image, too many pixels); read only what tells."""

    def decode(self, data: bytes, min_side: int) -> Image.Image:
        """Decode bytes to an RGB or RGBA image; raise ImageError when they are not one.

        The pipeline needs no more than ``min_side`` pixels on each side: a decoder may decode
        a reduced version down to that (a large JPEG decodes several times faster), and then
        records the full (width, height) in ``image.info["full_size"]``."""


class Remover(Protocol):
    """Optional, for a remover or an embedder: ``runs_onnx = True`` when it runs an ONNX model
    through the [onnxruntime] settings (`status` then shows what runs it)."""

    id: str

    def model_files(self) -> list[ModelFile]: ...

    def remove(self, image: Image.Image) -> Image.Image:
        """Return the image as RGB with its background replaced by white. A remover with
        several ways records the one it took, as a step id, in the result's info["removal"]."""


class Padder(Protocol):
    id: str

    def pad(self, image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
        """Return a ``size`` x ``size`` RGB image, resized with ``resample`` (the
        interpolation the embedder's model was trained with)."""


class Embedder(Protocol):
    """Optional: ``resample``, the interpolation its model was trained with (a
    ``PIL.Image.Resampling``; bilinear without it); ``embed_text(texts)`` -> (n, dimension)
    unit vectors comparable with the images', for an embedder that reads words (search by
    words is refused without it)."""

    dimension: int
    input_size: int

    @property
    def id(self) -> str:
        """Name and weights digest: vectors of different ids are never compared."""

    def model_files(self) -> list[ModelFile]: ...

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed square RGB images into an (n, dimension) float32 array of unit vectors
        (``unit_vectors`` makes them)."""


class VectorIndex(Protocol):
    """Nearest neighbours by cosine similarity among unit vectors stored under integer keys.

    Optional: ``scores_together = True`` when queries searched together cost less than one by
    one (the exact index reads its vectors once for all of them); searches asked at the same
    moment from several threads are then gathered into one (search/gathered.py)."""

    id: str

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` (n, d) under ``keys`` (n,), replacing what those keys held.
        ``vectors`` is handed over: the index may keep the array itself rather than a copy
        (a million vectors are 2 GB), and the caller does not change it afterwards."""

    def remove(self, keys: np.ndarray) -> None:
        """Forget the vectors under ``keys`` (each of them is stored)."""

    def search(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each of ``queries`` (m, d): the keys and cosine similarities of up to ``k``
        nearest vectors, most similar first. Queries asked together are scored together
        (the exact index reads its vectors once for all of them)."""

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """The vectors (n, d) stored under ``keys`` (each of them is stored): a catalogue
        item's lookalikes are searched from its vector as the index holds it."""


@runtime_checkable
class SavedIndex(VectorIndex, Protocol):
    """An index slow to build, which can be saved and restored instead (search/saved.py)."""

    def save(self, path: Path) -> None:
        """Write everything the index holds to ``path``."""

    def restore(self, path: Path, dimension: int) -> str | None:
        """Hold what ``path`` holds instead; None when done, else why it cannot be used (its
        settings differ from this index's, or it is not such a file)."""
