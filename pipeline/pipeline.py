"""The assembled pipeline: bytes -> decoded -> background removed -> padded -> unit vector."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.base.errors import ImageError, LookalikeError, TransientError, UnreadableFile
from lookalike.models.onnx import OnnxRuntime
from lookalike.pipeline.plugins import StepPlugin, installed
from lookalike.pipeline.settings import PipelineSteps
from lookalike.pipeline.steps import (
    VECTOR_STEP_KINDS,
    Decoder,
    Embedder,
    ModelFile,
    ModelSource,
    Padder,
    Remover,
)

NO_TEXT_TOWER = ("the configured embedder has no text tower: search by words needs a CLIP "
                 "model ([pipeline] embedder = \"clip\")")


@dataclass(frozen=True)
class Prepared:
    """An image ready to embed: the square the embedder sees, the decoded image's (width,
    height), and the way its background was removed (a step id)."""

    square: Image.Image
    size: tuple[int, int]
    removal: str


@dataclass
class Pipeline:
    decoder: Decoder
    remover: Remover
    padder: Padder
    embedder: Embedder
    # Each is told (images, seconds) after every embedding: the HTTP server's metrics.
    embed_observers: list[Callable[[int, float], None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        steps: dict[str, dict[str, StepPlugin]],
        chosen: PipelineSteps,
        tables: dict[str, dict[str, Any]],
        base_dir: Path,
        models: ModelSource,
        onnxruntime: OnnxRuntime,
    ) -> Pipeline:
        """Build each chosen step from its plugin and the config table named after it."""
        return cls(**{
            kind: installed(steps, kind, name).build(tables.get(name, {}), base_dir, models,
                                                     onnxruntime)
            for kind, name in ((kind, getattr(chosen, kind)) for kind in VECTOR_STEP_KINDS)
        })

    @property
    def model_id(self) -> str:
        """Every step's id: vectors made by pipelines with different ids are never compared."""
        steps = (self.decoder, self.remover, self.padder, self.embedder)
        return "+".join(step.id for step in steps)

    @property
    def limits(self) -> str:
        """The reading limits that decide which files are refused ("" when the decoder has
        none): a failed file is retried when they change, and nodes of one store share them."""
        return getattr(self.decoder, "limits", "")

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    @property
    def runs_onnx(self) -> bool:
        """True when a step runs an ONNX model (the [onnxruntime] settings apply)."""
        return any(getattr(step, "runs_onnx", False) for step in (self.remover, self.embedder))

    def model_files(self) -> list[ModelFile]:
        return self.remover.model_files() + self.embedder.model_files()

    def read_file(self, path: Path) -> bytes:
        """The bytes of an image file. The decoder checks its size and header first, so a
        huge or foreign file is refused (ImageError) without being read whole; one that cannot
        be read at all raises UnreadableFile (an ImageError too)."""
        try:
            with open(path, "rb") as file:
                with failures_of_one_file():
                    self.decoder.check(file, os.fstat(file.fileno()).st_size)
                file.seek(0)
                return file.read()
        except OSError as exc:
            raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from None

    def decode(self, data: bytes, min_side: int) -> Image.Image:
        """The decoded image (for a thumbnail); ImageError for anything that is not one."""
        with failures_of_one_file():
            return self.decoder.decode(data, min_side)

    def prepare(self, data: bytes) -> Prepared:
        """The image ready to embed. Raises ImageError for bytes any step cannot handle,
        whatever that step raised."""
        size = self.embedder.input_size
        with failures_of_one_file():
            image = self.decoder.decode(data, size)
            cutout = self.remover.remove(image)
            square = self.padder.pad(cutout, size, self.resample)
        return Prepared(square, image.info.get("full_size", image.size),
                        cutout.info.get("removal", self.remover.id))

    def warm_up(self) -> None:
        """Load every model now, so a missing or broken one stops start-up, not an image."""
        sample = Image.new("RGB", (64, 64), (255, 255, 255))
        sample.paste((90, 90, 90), (16, 16, 48, 48))
        self.embed([self.padder.pad(self.remover.remove(sample), self.embedder.input_size,
                                    self.resample)])

    @property
    def resample(self) -> Image.Resampling:
        """How the padder resizes: as the embedder's model was trained (bilinear unless it
        says otherwise)."""
        return getattr(self.embedder, "resample", Image.Resampling.BILINEAR)

    @property
    def reads_text(self) -> bool:
        """True when the embedder embeds words too (a CLIP model's text tower)."""
        return hasattr(self.embedder, "embed_text")

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts``, comparable with the images'; LookalikeError (one line)
        when the embedder has no text tower."""
        if not self.reads_text:
            raise LookalikeError(NO_TEXT_TOWER)
        with out_of_memory_passes():  # not observed: the observers time images
            return np.ascontiguousarray(self.embedder.embed_text(texts), dtype=np.float32)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit vectors, one row per prepared image; TransientError when memory ran out."""
        if not images:
            return np.zeros((0, self.dimension), dtype=np.float32)
        started = time.perf_counter()
        with out_of_memory_passes():
            vectors = np.ascontiguousarray(self.embedder.embed(images), dtype=np.float32)
        for observer in self.embed_observers:
            observer(len(images), time.perf_counter() - started)
        return vectors


@contextmanager
def failures_of_one_file() -> Iterator[None]:
    """Whatever a step raises over one file (Pillow's many exception types, a plugin's bug)
    is that file's failure, an ImageError with a one-line message; a LookalikeError about the
    set-up itself (a missing model, bad config) still stops the command."""
    try:
        with out_of_memory_passes():
            yield
    except LookalikeError as exc:
        if isinstance(exc, ImageError):
            raise ImageError(one_line(str(exc))) from exc
        raise
    except Exception as exc:
        raise ImageError(one_line(f"{type(exc).__name__}: {exc}")) from exc


# How ONNX Runtime and torch say that an allocation failed (they raise RuntimeError).
OUT_OF_MEMORY = ("failed to allocate", "bad_alloc", "out of memory",
                 "cannot allocate memory")


@contextmanager
def out_of_memory_passes() -> Iterator[None]:
    """Memory that ran out is the machine's state, not the file's: a TransientError, so the
    work is tried again later instead of failed."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, MemoryError) or any(
                words in str(exc).lower() for words in OUT_OF_MEMORY):
            raise TransientError(one_line(f"{type(exc).__name__}: {exc}")) from exc
        raise


def one_line(message: str) -> str:
    return " ".join(message.split())
