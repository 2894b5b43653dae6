"""Removers "rembg" (rembg's sessions, one per process) and "none" (flatten onto white only)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, ModelMissingError
from ..hookspecs import hookimpl
from ..imaging import on_white
from ..steps import ModelFile, StepSettings

CUSTOM_SESSION = "u2net_custom"


class RembgRemover:
    def __init__(self, settings: StepSettings):
        self._model_path = settings.path("model_path")
        self._model = CUSTOM_SESSION if self._model_path else settings.options["model"]
        self._session = None

    @cached_property
    def _session_class(self):
        from rembg.sessions import sessions_class

        for session_class in sessions_class:
            if session_class.name() == self._model:
                return session_class
        names = ", ".join(sorted(c.name() for c in sessions_class))
        raise ConfigError(f"[rembg] model {self._model!r} is not a rembg model; one of: {names}")

    def model_files(self) -> list[ModelFile]:
        session_class = self._session_class
        if self._model_path:
            roots = [Path(session_class.rembg_home()), Path(session_class.legacy_home())]
            how = f"rembg loads custom models only from inside {roots[0]} (REMBG_HOME)"
            return [ModelFile("rembg", self._model_path, how)]
        file_name = f"{self._model}.onnx"
        existing = session_class.resolve_existing(file_name)
        path = Path(existing or os.path.join(session_class.model_dir(), file_name))
        how = f"copy {file_name} from rembg's releases there (or set REMBG_HOME / U2NET_HOME)"
        return [ModelFile("rembg", path, how)]

    @cached_property
    def _model_file(self) -> ModelFile:
        return self.model_files()[0].required(f"rembg model {self._model}")

    @cached_property
    def id(self) -> str:
        return f"rembg-{self._model}@{self._model_file.sha256()[:12]}"

    def _new_session(self):
        from rembg import new_session

        path = self._model_file.path
        if self._model_path is None:
            return new_session(self._model)
        try:
            return new_session(CUSTOM_SESSION, model_path=str(path))
        except ValueError as exc:  # rembg refuses paths outside its model folder
            raise ModelMissingError(f"[rembg] model_path {path}: {exc}") from None

    def remove(self, image: Image.Image) -> Image.Image:
        from rembg import remove

        if self._session is None:
            self._session = self._new_session()
        # rembg divides by the mask's range, which is 0 for a plain, uniform photo.
        with np.errstate(divide="ignore", invalid="ignore"):
            cutout = remove(image, session=self._session, bgcolor=(255, 255, 255, 255))
        return on_white(cutout)


class NoRemover:
    """Keeps the whole photo; only transparency is flattened onto white."""

    id = "none"

    def model_files(self) -> list[ModelFile]:
        return []

    def remove(self, image: Image.Image) -> Image.Image:
        return on_white(image)


@hookimpl
def register_removers(register):
    register("rembg", RembgRemover, {"model": "u2net", "model_path": ""})
    register("none", lambda settings: NoRemover())
