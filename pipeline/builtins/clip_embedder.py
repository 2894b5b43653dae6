"""Embedder "clip": an open_clip model's image tower for the catalogue, its text tower for
search by words.

The model is built by open_clip from its own architecture config and loaded from one weights
file; lookalike fetches that file itself, pinned, like every other model file. The pixels the
image tower sees are prepared as the model's preprocessing config declares (size, mean, std,
interpolation: ``open_clip.get_model_preprocess_cfg``); on a square image, which is what the
white padder makes, that is exactly open_clip's own transform (tested).

Two backends compute the same vectors (cosine >= 0.9999, tested): "onnxruntime" runs each tower
exported once to ONNX, cached under the weights' digest with its preprocessing config inside;
"torch" runs open_clip's model eagerly. The text's tokens come from open_clip's tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.base.errors import ConfigError, LookalikeError, first_line
from lookalike.models.derived import export_onnx
from lookalike.models.files import ModelFile
from lookalike.models.onnx import OnnxRuntime
from lookalike.pipeline.builtins.clip_models import BUILTINS, Builtin
from lookalike.pipeline.builtins.weights_embedder import WeightsEmbedder, exported
from lookalike.pipeline.steps import StepSettings, unit_vectors

# A model in a folder of open_clip's own layout (its config and weights file, as a hub
# model's files are downloaded), and the names open_clip looks for its weights under.
LOCAL_DIR = "local-dir:"
WEIGHTS_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# The metadata key of the image tower's export that holds the preprocessing config.
PREPROCESS_KEY = "open_clip_preprocess_cfg"
RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
              "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def architecture_config(architecture: str) -> dict[str, Any]:
    """open_clip's config of ``architecture``, read from its package without importing it
    (which imports torch); ConfigError when open_clip has no such architecture."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the clip embedder needs open_clip: pip install open-clip-torch")
    file = Path(spec.submodule_search_locations[0]) / "model_configs" / f"{architecture}.json"
    if not re.fullmatch(r"[\w.-]+", architecture) or not file.is_file():
        raise ConfigError(f"clip.model: open_clip has no architecture {architecture!r} "
                          "(`python -c 'import open_clip; print(open_clip.list_models())'` "
                          "lists them)")
    return json.loads(file.read_text())


def folder_config(folder: Path) -> dict[str, Any]:
    """The open_clip_config.json of a local-dir: model (as `hf download` fetches a hub
    model's files); ConfigError when it is missing or not one."""
    file = folder / "open_clip_config.json"
    try:
        config = json.loads(file.read_text())
        int(config["model_cfg"]["embed_dim"])
    except OSError as exc:
        raise ConfigError(f"clip.model: cannot read {file}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"clip.model: {file} is not an open_clip config (no "
                          "model_cfg.embed_dim)") from None
    return config


def folder_weights(folder: Path) -> Path:
    """The weights file of a local-dir: model (the first of ``WEIGHTS_NAMES`` there)."""
    return next((folder / name for name in WEIGHTS_NAMES if (folder / name).is_file()),
                folder / WEIGHTS_NAMES[0])


def load_torch_model(architecture: str, tag: str | None, weights: Path):
    """open_clip's ``architecture`` with the weights at ``weights``, preprocessing as ``tag``
    declares (open_clip's defaults without one), in eval mode. A ``local-dir:`` architecture
    brings its config; its weights are still loaded from ``weights``, the file whose digest
    names the model (open_clip would pick one of the folder's files by its own order)."""
    import open_clip

    preprocess = {}
    if tag:
        pretrained = open_clip.get_pretrained_cfg(architecture, tag)
        if not pretrained:
            raise LookalikeError(f"clip.model: open_clip has no pretrained tag {tag!r} for "
                                 f"{architecture}")
        preprocess = {key: pretrained[key] for key in
                      ("mean", "std", "interpolation", "resize_mode") if key in pretrained}
    try:
        if architecture.startswith(LOCAL_DIR):
            model = open_clip.create_model(architecture, load_weights=False)
            open_clip.load_checkpoint(model, str(weights))
        else:
            model = open_clip.create_model(architecture, pretrained=str(weights),
                                           force_preprocess_cfg=preprocess)
    except Exception as exc:  # a state dict of another model: open_clip says which keys
        raise LookalikeError(f"{weights} is not {architecture} weights: "
                             f"{first_line(exc)}") from None
    return model.eval()


class TorchBackend:
    def __init__(self, model):
        self._model = model

    @property
    def preprocess(self) -> dict[str, Any]:
        import open_clip

        return dict(open_clip.get_model_preprocess_cfg(self._model))

    def images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._model.encode_image(torch.from_numpy(pixels)).numpy()

    def texts(self, tokens: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._model.encode_text(torch.from_numpy(tokens)).numpy()


class OnnxBackend:
    def __init__(self, image_file: Path, text_file: Path, runtime: OnnxRuntime):
        self._image = runtime.session(str(image_file))
        self._text_file, self._runtime = text_file, runtime

    @property
    def preprocess(self) -> dict[str, Any]:
        return json.loads(self._image.get_modelmeta().custom_metadata_map[PREPROCESS_KEY])

    @cached_property
    def _text(self):
        return self._runtime.session(str(self._text_file))

    def images(self, pixels: np.ndarray) -> np.ndarray:
        return self._image.run(None, {"pixels": pixels})[0]

    def texts(self, tokens: np.ndarray) -> np.ndarray:
        return self._text.run(None, {"tokens": tokens})[0]


def export_towers(model, image_file: Path, text_file: Path) -> None:
    """Export each tower of ``model`` to ONNX once. The image tower's file carries the
    preprocessing config, so running it needs no torch."""
    import open_clip
    import torch

    class Tower(torch.nn.Module):
        def __init__(self, method: str):
            super().__init__()
            self.model, self.method = model, method  # the model a submodule: its weights too

        def forward(self, inputs):
            return getattr(self.model, self.method)(inputs)

    preprocess = dict(open_clip.get_model_preprocess_cfg(model))
    side = square_side(preprocess["size"])
    export_onnx(Tower("encode_image"), torch.zeros(1, 3, side, side), "pixels", image_file,
                {PREPROCESS_KEY: json.dumps(preprocess)})
    export_onnx(Tower("encode_text"), torch.zeros((1, model.context_length), dtype=torch.long),
                "tokens", text_file)


def square_side(size: int | Sequence[int]) -> int:
    """The side of the square a model's config asks for (open_clip allows (h, w))."""
    sides = (size, size) if isinstance(size, int) else tuple(size)
    if sides[0] != sides[1]:
        raise LookalikeError(f"clip: the model takes {sides[0]}x{sides[1]} images; lookalike "
                             "feeds squares")
    return int(sides[0])


class ClipEmbedder(WeightsEmbedder):
    def __init__(self, settings: StepSettings):
        options = settings.options
        self.model = options["model"]
        builtin = BUILTINS.get(self.model)
        self._folder: Path | None = None  # a local-dir: model's folder
        if builtin is not None:
            self._architecture, self._tag = builtin.architecture, builtin.tag
        elif self.model.startswith("hf-hub:"):
            raise ConfigError(
                f"clip.model: lookalike pins the weights of {', '.join(BUILTINS)}; for "
                f"{self.model}, download its files (`hf download "
                f"{self.model.removeprefix('hf-hub:')} --local-dir "
                "DIR`) and set model = \"local-dir:DIR\", or name its open_clip architecture "
                "and set [clip] weights")
        elif self.model.startswith(LOCAL_DIR):
            self._folder = settings.base_dir / Path(self.model[len(LOCAL_DIR):]).expanduser()
            self._architecture, self._tag = "local", None
        else:
            self._architecture, _, tag = self.model.partition("/")
            self._tag = tag or None
        config = (folder_config(self._folder)["model_cfg"] if self._folder
                  else architecture_config(self._architecture))
        self.dimension = int(config["embed_dim"])
        super().__init__("clip", settings, self._weights_file_of(settings, builtin),
                         f"{self.model} weights")

    def _weights_file_of(self, settings: StepSettings, builtin: Builtin | None) -> ModelFile:
        """The weights file: a local-dir: model's, [clip] weights, or a built-in's, fetched."""
        how = f"set [clip] weights to the {self.model} weights file"
        if self._folder is not None:
            if settings.options["weights"]:
                raise ConfigError("clip.weights: a local-dir: model's weights are its folder's")
            return ModelFile("clip", folder_weights(self._folder), f"put "
                             f"{' or '.join(WEIGHTS_NAMES)} in {self._folder}",
                             pin=settings.pin("weights", "clip"), source=settings.models)
        if settings.options["weights"]:
            return settings.model_file("weights", "clip", how)
        if builtin is None:
            raise ConfigError(f"clip.model {self.model!r} is not one lookalike pins: set "
                              "[clip] weights to its weights file")
        name = builtin.file_name
        return ModelFile("clip", settings.models.place(name, settings.models.cache_dir / name),
                         f"download {builtin.url} to that path (or to [models] dir as "
                         f"{name}), or {how}", url=builtin.url, pin=f"sha256:{builtin.sha256}",
                         source=settings.models)

    @cached_property
    def id(self) -> str:
        # Both backends give the same vectors, so they share the id; a folder's model is
        # named by its weights alone, so nodes that keep it in other folders agree.
        name = "local-dir" if self._folder is not None else self.model
        return f"clip:{name}@{self._digest[:12]}"

    def onnx_files(self) -> tuple[Path, Path]:
        """Where the exports of the image and the text tower are cached."""
        stem = f"clip-{self._architecture}-{self._digest[:16]}"
        return self._cache_dir / f"{stem}-image.onnx", self._cache_dir / f"{stem}-text.onnx"

    def _torch_model(self):
        architecture = f"{LOCAL_DIR}{self._folder}" if self._folder else self._architecture
        return load_torch_model(architecture, self._tag, self._weights.path)

    def _load_backend(self) -> TorchBackend | OnnxBackend:
        if self._backend_name == "torch":
            return TorchBackend(self._torch_model())
        image_file, text_file = self.onnx_files()
        exported([image_file, text_file],
                 lambda: export_towers(self._torch_model(), image_file, text_file),
                 f"the towers of {self.model}")
        return OnnxBackend(image_file, text_file, self._runtime)

    @cached_property
    def _preprocess(self) -> dict[str, Any]:
        return self._backend.preprocess

    @property
    def input_size(self) -> int:
        return square_side(self._preprocess["size"])

    @property
    def resample(self) -> Image.Resampling:
        """The interpolation the model's preprocessing declares, for the padder's resize."""
        name = self._preprocess.get("interpolation", "bicubic")
        if name not in RESAMPLING:
            raise LookalikeError(f"clip: {self.model} resizes with {name!r}; lookalike knows "
                                 f"{', '.join(RESAMPLING)}")
        return RESAMPLING[name]

    def pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The image tower's input: an (n, 3, side, side) float32 batch, normalised by the
        model's mean and std."""
        mean = np.asarray(self._preprocess["mean"], dtype=np.float32)
        std = np.asarray(self._preprocess["std"], dtype=np.float32)
        stacked = np.stack([np.asarray(image.convert("RGB")) for image in images])
        pixels = stacked.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        return (pixels - mean[:, None, None]) / std[:, None, None]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return unit_vectors(self._backend.images(self.pixels(images)))

    @cached_property
    def _tokenizer(self):
        import open_clip

        return open_clip.get_tokenizer(f"{LOCAL_DIR}{self._folder}" if self._folder
                                       else self._architecture)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts`` by the text tower, comparable with the images'."""
        self._backend  # noqa: B018 (a missing model stops the command before the tokenizer)
        try:
            tokens = self._tokenizer(list(texts))
        except Exception as exc:  # a tokenizer of the hub's (SigLIP's): not to be had here
            raise LookalikeError(
                f"clip: the tokenizer of {self.model} cannot be loaded ({first_line(exc)}): "
                "open_clip reads it through `transformers` from the Hugging Face hub or the "
                "model's folder, which lookalike neither installs nor fetches; FashionCLIP "
                "and ViT-B-32 read words with open_clip's own") from None
        return unit_vectors(self._backend.texts(tokens.numpy().astype(np.int64)))
