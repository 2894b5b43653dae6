"""The assembled pipeline: bytes -> decoded -> background removed -> padded -> unit vector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import ConfigError
from .plugins import StepPlugin
from .steps import VECTOR_STEP_KINDS, Decoder, Embedder, ModelFile, Padder, Remover


@dataclass
class Pipeline:
    decoder: Decoder
    remover: Remover
    padder: Padder
    embedder: Embedder

    @classmethod
    def build(
        cls,
        steps: dict[str, dict[str, StepPlugin]],
        chosen: dict[str, str],
        tables: dict[str, dict[str, Any]],
        base_dir: Path,
    ) -> Pipeline:
        """Build each chosen step from its plugin and the config table named after it."""
        built = {}
        for kind in VECTOR_STEP_KINDS:
            name = chosen[kind]
            if name not in steps[kind]:
                names = ", ".join(sorted(steps[kind]))
                raise ConfigError(f"[pipeline] {kind} {name!r} is not installed; one of: {names}")
            built[kind] = steps[kind][name].build(tables.get(name, {}), base_dir)
        return cls(**built)

    @property
    def model_id(self) -> str:
        """Every step's id: vectors made by pipelines with different ids are never compared."""
        steps = (self.decoder, self.remover, self.padder, self.embedder)
        return "+".join(step.id for step in steps)

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    def model_files(self) -> list[ModelFile]:
        return self.remover.model_files() + self.embedder.model_files()

    def prepare(self, data: bytes) -> tuple[Image.Image, tuple[int, int]]:
        """The square image the embedder sees, and the decoded image's (width, height).

        Raises ImageError for bytes the decoder cannot read.
        """
        size = self.embedder.input_size
        image = self.decoder.decode(data, size)
        square = self.padder.pad(self.remover.remove(image), size)
        return square, image.info.get("full_size", image.size)

    def warm_up(self) -> None:
        """Load every model now, so a missing or broken one stops start-up, not an image."""
        sample = Image.new("RGB", (64, 64), (255, 255, 255))
        sample.paste((90, 90, 90), (16, 16, 48, 48))
        self.embed([self.padder.pad(self.remover.remove(sample), self.embedder.input_size)])

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit vectors, one row per prepared image."""
        if not images:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.ascontiguousarray(self.embedder.embed(images), dtype=np.float32)
