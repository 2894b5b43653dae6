"""What the built-in embedders share, the life of a model (as immich's ``InferenceModel``):
one weights file, fetched and verified on first use; the backend the options name loaded
once, under a lock, then run. "onnxruntime" runs the model's ONNX export, made once per
weights file and trusted only while it matches its recorded digest; "torch" runs it eagerly.
Both give the same vectors, so an embedder's model id never names its backend."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from lookalike.base.cache import cache_home
from lookalike.base.errors import ConfigError
from lookalike.models.derived import is_sound
from lookalike.models.files import ModelFile
from lookalike.models.onnx import BACKENDS
from lookalike.pipeline.steps import StepSettings

log = logging.getLogger(__name__)


class WeightsEmbedder(ABC):
    """A subclass says where its weights are (``weights_file``, named ``weights_name`` in
    messages) and loads its backend in ``_load_backend``."""

    def __init__(self, step: str, settings: StepSettings, weights_file: ModelFile,
                 weights_name: str):
        if settings.options["backend"] not in BACKENDS:
            raise ConfigError(f"{step}.backend must be one of {', '.join(BACKENDS)}")
        self._backend_name = settings.options["backend"]
        self._weights_file, self._weights_name = weights_file, weights_name
        self._cache_dir = settings.path("cache_dir") or cache_home() / "lookalike"
        self._runtime = settings.onnxruntime
        self._loading, self._loaded = threading.Lock(), None

    @property
    def runs_onnx(self) -> bool:
        return self._backend_name == "onnxruntime"

    def model_files(self) -> list[ModelFile]:
        return [self._weights_file]

    @cached_property
    def _weights(self) -> ModelFile:
        """The weights file, fetched if missing and verified."""
        return self._weights_file.required(self._weights_name)

    @cached_property
    def _digest(self) -> str:
        return self._weights.sha256()

    @property
    def _backend(self) -> Any:
        # Loaded once, under a lock: the preparing threads ask for the input size at once,
        # and two threads must not export a model side by side.
        with self._loading:
            if self._loaded is None:
                self._loaded = self._load_backend()
            return self._loaded

    @abstractmethod
    def _load_backend(self) -> Any:
        """What runs the model (its ONNX Runtime session or torch module), loaded."""


def exported(files: Sequence[Path], export: Callable[[], None], what: str) -> None:
    """Make ``files``, the ONNX export of ``what``, by ``export`` unless each is there and
    sound (a damaged one is made again, never loaded)."""
    if all(is_sound(file) for file in files):
        return
    if any(file.exists() for file in files):
        log.warning("the ONNX export of %s does not match its recorded digest: exporting it "
                    "again", what)
    log.info("exporting %s to ONNX, once for these weights (into %s)", what, files[0].parent)
    export()
