"""Embedder "resnet18": torchvision's ResNet-18 without its classifier, 512-d unit vectors.

torch and torchvision are imported only when a model file path or the model itself is needed,
so commands that never embed stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import LookalikeError
from ..hookspecs import hookimpl
from ..steps import ModelFile, StepSettings

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def imagenet_weights_file() -> ModelFile:
    """Where torchvision caches the IMAGENET1K_V1 weights, and where they come from."""
    import torch
    from torchvision.models import ResNet18_Weights

    url = ResNet18_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    how = f"download {url} to that path (or set TORCH_HOME), or set [resnet18] weights to a file"
    return ModelFile("resnet18", path, how)


class ResNet18Embedder:
    dimension = 512
    input_size = 224

    def __init__(self, settings: StepSettings):
        self._custom_weights = None
        if settings.options["weights"] != "imagenet":
            self._custom_weights = settings.path("weights")
        self._model = None

    def model_files(self) -> list[ModelFile]:
        if self._custom_weights is None:
            return [imagenet_weights_file()]
        how = "set [resnet18] weights to a ResNet-18 state dict, or to \"imagenet\""
        return [ModelFile("resnet18", self._custom_weights, how)]

    @cached_property
    def _weights(self) -> ModelFile:
        return self.model_files()[0].required("ResNet-18 weights")

    @cached_property
    def id(self) -> str:
        return f"resnet18@{self._weights.sha256()[:12]}"

    def _load(self):
        import torch
        from torchvision.models import resnet18

        path = self._weights.path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LookalikeError(f"cannot load ResNet-18 weights from {path}: {exc}") from None
        model = resnet18(weights=None)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except (RuntimeError, AttributeError) as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise LookalikeError(f"{path} is not a ResNet-18 state dict: {first_line}") from None
        missing = [key for key in missing if not key.startswith("fc.")]
        if missing or unexpected:
            keys = ", ".join((missing + unexpected)[:3])
            raise LookalikeError(f"{path} is not a ResNet-18 state dict (keys: {keys}, ...)")
        model.fc = torch.nn.Identity()
        return model.eval()

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if self._model is None:
            self._model = self._load()
        pixels = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])
        pixels = (pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        batch = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
        with torch.inference_mode():
            features = self._model(batch).numpy().astype(np.float32)
        return features / np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)


@hookimpl
def register_embedders(register):
    register("resnet18", ResNet18Embedder, {"weights": "imagenet"})
