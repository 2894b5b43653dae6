"""Removers "rembg" (u2net or another of rembg's networks on every image, one session per
process) and "none" (flatten onto white only)."""

from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.base.errors import ConfigError, ModelMissingError
from lookalike.models.files import ModelFile, ModelSource, file_digest
from lookalike.models.quantize import int8_copy, quantized
from lookalike.pipeline.imaging import on_white
from lookalike.pipeline.steps import StepSettings

CUSTOM_SESSION = "u2net_custom"
RELEASES = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"
# rembg's single-file models: the file each is released as, and the md5 rembg's own session
# class checks it by (pinned here, so a fetch is verified before anything loads it).
MODELS = {
    "u2net": ("u2net.onnx", "md5:60024c5c889badc19c04ad937298a77b"),
    "u2netp": ("u2netp.onnx", "md5:8e83ca70e441ab06c318d82300c84806"),
    "u2net_human_seg": ("u2net_human_seg.onnx", "md5:c09ddc2e0104f800e3e1bb4652583d1f"),
    "u2net_cloth_seg": ("u2net_cloth_seg.onnx", "md5:2434d1f3cb744e0e49386c906e5a08bb"),
    "silueta": ("silueta.onnx", "md5:55e59e0d8062d2f5d013f4725ee84782"),
    "isnet-general-use": ("isnet-general-use.onnx", "md5:fc16ebd8b0c10d971d3513d564d01e29"),
    "isnet-anime": ("isnet-anime.onnx", "md5:6f184e756bb3bd901c8849220a83e38e"),
    "birefnet-general": ("BiRefNet-general-epoch_244.onnx",
                         "md5:7a35a0141cbbc80de11d9c9a28f52697"),
    "birefnet-general-lite": ("BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx",
                              "md5:4fab47adc4ff364be1713e97b7e66334"),
    "birefnet-portrait": ("BiRefNet-portrait-epoch_150.onnx",
                          "md5:c3a64a6abf20250d090cd055f12a3b67"),
    "birefnet-dis": ("BiRefNet-DIS-epoch_590.onnx", "md5:2d4d44102b446f33a4ebb2e56c051f2b"),
    "birefnet-hrsod": ("BiRefNet-HRSOD_DHU-epoch_115.onnx",
                       "md5:c017ade5de8a50ff0fd74d790d268dda"),
    "birefnet-cod": ("BiRefNet-COD-epoch_125.onnx", "md5:f6d0d21ca89d287f17e7afe9f5fd3b45"),
    "birefnet-massive": ("BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.onnx",
                         "md5:33e726a2136a3d59eb0fdf613e31e3e9"),
}
# The u2net family: one 320×320 input normalised as ImageNet's, which an int8 copy is
# calibrated on exactly as the session feeds it.
INT8_MODELS = {"u2net", "u2netp", "u2net_human_seg", "silueta", CUSTOM_SESSION}
U2NET_INPUT = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (320, 320))


class RembgRemover:
    runs_onnx = True

    def __init__(self, settings: StepSettings, table: str = "rembg"):
        """rembg's network as the config table ``table`` ([rembg], or [auto] for its
        network) names it."""
        self._table = table
        how = f"set [{table}] model_path to an ONNX file or an https:// URL with model_path_sha256"
        custom = settings.model_file("model_path", table, how)
        self._model = CUSTOM_SESSION if custom else settings.options["model"]
        self._file = custom or self._named_model_file(settings.models)
        self._int8 = bool(settings.options["int8"])
        if self._int8 and self._model not in INT8_MODELS:
            raise ConfigError(f"[{table}] int8: only for the u2net family "
                              f"({', '.join(sorted(INT8_MODELS))}), not {self._model}")
        self._int8_folder = settings.models.cache_dir
        self._runtime = settings.onnxruntime
        self._session = None
        # One image at a time: ONNX Runtime already uses every core for one, and two at once
        # are slower than one after the other (bench/removal.py).
        self._lock = threading.Lock()

    def _named_model_file(self, source: ModelSource) -> ModelFile:
        """A model rembg releases: in [models] dir, else rembg's folder, fetched there."""
        if self._model not in MODELS:
            names = ", ".join(sorted(MODELS))
            raise ConfigError(f"[{self._table}] model {self._model!r} is not one lookalike can "
                              f"verify; one of: {names} (or set [{self._table}] model_path)")
        released, pin = MODELS[self._model]
        session_class = self._session_class
        file_name = f"{self._model}.onnx"  # how rembg names it in its folder
        existing = session_class.resolve_existing(file_name)
        default = Path(existing or os.path.join(session_class.model_dir(), file_name))
        renamed = f" as {file_name}" if released != file_name else ""
        how = f"copy {released} from rembg's releases there{renamed} (or into [models] dir)"
        return ModelFile(self._table, source.place(file_name, default), how,
                         url=RELEASES + released, pin=pin, source=source)

    @cached_property
    def _session_class(self):
        from rembg.sessions import sessions_class

        for session_class in sessions_class:
            if session_class.name() == self._model:
                return session_class
        raise ConfigError(f"[{self._table}] model {self._model!r} is not a rembg model")

    def model_files(self) -> list[ModelFile]:
        return [self._file]

    @cached_property
    def _model_file(self) -> ModelFile:
        return self._file.required(f"rembg model {self._model}")

    @cached_property
    def id(self) -> str:
        if self._int8:
            return f"rembg-{self._model}-int8@{file_digest(self._run_path, 'sha256')[:12]}"
        return f"rembg-{self._model}@{self._model_file.sha256()[:12]}"

    @property
    def int8_path(self) -> Path:
        """Where the int8 copy of the (verified) model is kept: named by the model's digest."""
        digest = self._model_file.sha256()[:16]
        return self._int8_folder / f"{self._model}-int8-{digest}.onnx"

    @cached_property
    def _run_path(self) -> Path:
        """The file the session runs: the verified model, or its int8 copy when asked for."""
        if not self._int8:
            return self._model_file.path
        return int8_copy(self.int8_path, f"rembg model {self._model}")

    @property
    def name(self) -> str:
        """The model and the table naming it, as messages show them: "u2net ([auto])"."""
        return f"{self._model} ([{self._table}])"

    def quantize(self, photos: list[Image.Image]) -> Path:
        """Make the int8 copy of the model (``int8_path``), its ranges calibrated on
        ``photos`` exactly as the session feeds them to the network."""
        if self._model not in INT8_MODELS:
            raise ConfigError(f"[{self._table}] model {self._model}: int8 copies are made only "
                              f"of the u2net family ({', '.join(sorted(INT8_MODELS))})")
        session = self._new_session(self._model_file.path)
        name = session.inner_session.get_inputs()[0].name
        samples = [session.normalize(photo, *U2NET_INPUT)[name] for photo in photos]
        return quantized(self._model_file.path, self.int8_path, name, samples)

    def _new_session(self, model: Path | None = None):
        path = str(model or self._run_path)

        class VerifiedFile(self._session_class):
            """rembg's session over exactly the file lookalike located and verified: rembg
            neither downloads nor looks elsewhere."""

            @classmethod
            def download_models(cls, *args, **kwargs):
                return path

        try:  # the custom session wants to be told its path too
            return VerifiedFile(self._model, self._runtime.session_options(), model_path=path,
                                providers=self._runtime.chosen())
        except Exception as exc:  # the model itself, not an image: stop the command
            raise ModelMissingError(f"cannot load rembg model {path}: {exc}") from None

    def remove(self, image: Image.Image) -> Image.Image:
        from rembg import remove

        with self._lock:
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
