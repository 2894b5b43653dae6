"""Embedder "resnet18": torchvision's ResNet-18 without its classifier, 512-d unit vectors.

Two backends compute the same vectors (cosine >= 0.9999, tested): "onnxruntime" runs the model
exported once to ONNX and cached under the weights' digest, and needs no torch at run time;
"torch" runs it eagerly. torch is imported only to load weights or export them, so commands
that never embed stay fast. Opt-in, ONNX Runtime only: an int8 copy of the export, calibrated
on the user's own photos by `lookalike quantize`; it is faster and its vectors differ slightly,
so it has its own model id.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.base.cache import cache_home
from lookalike.base.errors import ConfigError, LookalikeError, first_line
from lookalike.models.derived import export_onnx
from lookalike.models.files import ModelFile, ModelSource, file_digest
from lookalike.models.onnx import OnnxRuntime
from lookalike.models.quantize import int8_copy, quantized
from lookalike.pipeline.builtins.weights_embedder import WeightsEmbedder, exported
from lookalike.pipeline.steps import StepSettings, unit_vectors

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# (pixel / 255 - mean) / std as one multiply-add on the uint8 pixels.
PIXEL_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
PIXEL_SHIFT = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
# torchvision's ResNet18_Weights.IMAGENET1K_V1, named here so finding it needs no torch import.
IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
# torchvision checks this file by the sha256 prefix in its name; so does lookalike.
IMAGENET_PIN = "sha256:f37072fd"
CALIBRATION_BATCH = 8


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch: $TORCH_HOME/hub, else the XDG cache."""
    return Path(os.environ.get("TORCH_HOME", cache_home() / "torch")).expanduser() / "hub"


def imagenet_weights_file(source: ModelSource) -> ModelFile:
    """The IMAGENET1K_V1 weights: in [models] dir, else torchvision's cache, fetched there."""
    name = Path(IMAGENET_URL).name
    how = (f"download {IMAGENET_URL} to that path (or to [models] dir), or set [resnet18] "
           "weights to a file")
    return ModelFile("resnet18", source.place(name, torch_hub_dir() / "checkpoints" / name),
                     how, url=IMAGENET_URL, pin=IMAGENET_PIN, source=source)


def load_torch_model(path: Path):
    """The ResNet-18 of the state dict at ``path``, classifier removed, in eval mode."""
    import torch
    from torchvision.models import resnet18

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LookalikeError(f"cannot load ResNet-18 weights from {path}: {exc}") from None
    model = resnet18(weights=None)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, AttributeError) as exc:
        raise LookalikeError(f"{path} is not a ResNet-18 state dict: "
                             f"{first_line(exc)}") from None
    missing = [key for key in missing if not key.startswith("fc.")]
    if missing or unexpected:
        keys = ", ".join((missing + unexpected)[:3])
        raise LookalikeError(f"{path} is not a ResNet-18 state dict (keys: {keys}, ...)")
    model.fc = torch.nn.Identity()
    return model.eval()


def export_to(weights: Path, destination: Path) -> None:
    """Export the model of ``weights`` to ONNX at ``destination``."""
    import torch

    export_onnx(load_torch_model(weights), torch.zeros(1, 3, 224, 224), "pixels", destination)


class TorchBackend:
    def __init__(self, weights: Path):
        self._model = load_torch_model(weights)

    def images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._model(torch.from_numpy(pixels)).numpy()


class OnnxBackend:
    def __init__(self, path: Path, runtime: OnnxRuntime):
        self._session = runtime.session(str(path))

    def images(self, pixels: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"pixels": pixels})[0]


class ResNet18Embedder(WeightsEmbedder):
    dimension = 512
    input_size = 224

    def __init__(self, settings: StepSettings):
        options = settings.options
        self._int8 = bool(options["int8"])
        if self._int8 and options["backend"] != "onnxruntime":
            raise ConfigError("resnet18.int8 needs backend \"onnxruntime\" (the int8 copy is "
                              "an ONNX model)")
        if options["weights"] == "imagenet":
            weights_file = imagenet_weights_file(settings.models)
        else:
            how = "set [resnet18] weights to a ResNet-18 state dict, or to \"imagenet\""
            weights_file = settings.model_file("weights", "resnet18", how)
        super().__init__("resnet18", settings, weights_file, "ResNet-18 weights")

    @cached_property
    def id(self) -> str:
        # Both backends give the same vectors, so they share the id: switching re-embeds nothing.
        # An int8 copy is named by its own digest: each calibration moves the vectors its way.
        if self._int8:
            return f"resnet18-int8@{file_digest(self._int8_file, 'sha256')[:12]}"
        return f"resnet18@{self._digest[:12]}"

    @cached_property
    def _int8_file(self) -> Path:
        return int8_copy(self.int8_path, "ResNet-18")

    def _load_backend(self) -> TorchBackend | OnnxBackend:
        if self._backend_name == "torch":
            return TorchBackend(self._weights.path)
        if self._int8:
            return OnnxBackend(self._int8_file, self._runtime)
        return OnnxBackend(self._exported(), self._runtime)

    def _exported(self) -> Path:
        """The ONNX export of the weights, made unless it is there and sound."""
        exported([self.onnx_file], lambda: export_to(self._weights.path, self.onnx_file),
                 "ResNet-18")
        return self.onnx_file

    @property
    def onnx_file(self) -> Path:
        """Where the ONNX export of these weights is cached (made by the first embedding)."""
        return self._cache_dir / f"resnet18-{self._digest[:16]}.onnx"

    @property
    def int8_path(self) -> Path:
        """Where the int8 copy of the export is kept (made by ``quantize``)."""
        return self._cache_dir / f"resnet18-int8-{self._digest[:16]}.onnx"

    def quantize(self, squares: Sequence[Image.Image]) -> Path:
        """Make the int8 copy (``int8_path``), its ranges calibrated on ``squares``: photos as
        the pipeline prepares them for the embedder."""
        samples = [self.pixels(squares[start:start + CALIBRATION_BATCH])
                   for start in range(0, len(squares), CALIBRATION_BATCH)]
        return quantized(self._exported(), self.int8_path, "pixels", samples)

    def pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The model's input: an (n, 3, 224, 224) float32 batch, ImageNet-normalised."""
        stacked = np.stack([np.asarray(image.convert("RGB")) for image in images])
        # Channel by channel into the (n, 3, h, w) layout: one pass over each plane, 4x
        # faster than converting the whole batch, then transposing it.
        pixels = np.empty((len(images), 3, *stacked.shape[1:3]), dtype=np.float32)
        for channel in range(3):
            np.multiply(stacked[..., channel], PIXEL_SCALE[channel], out=pixels[:, channel])
            pixels[:, channel] += PIXEL_SHIFT[channel]
        return pixels

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return unit_vectors(self._backend.images(self.pixels(images)))
