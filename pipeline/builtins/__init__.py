"""The built-in steps, declared as any plugin declares its own (docs/plugins.md): a name, the
options of its config table with their help, and a factory. A step's module, with numpy,
Pillow or ONNX Runtime, is imported only when the step is built: reading the config
(`lookalike status`, `init`, `plugins`) loads none of them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from lookalike.pipeline.builtins.clip_models import BUILTINS, DEFAULT_MODEL
from lookalike.pipeline.hookspecs import hookimpl
from lookalike.pipeline.steps import StepSettings

PILLOW_OPTIONS = {"max_pixels": 64_000_000, "max_file_bytes": 200_000_000}
PILLOW_HELP = {"max_pixels": "larger images are refused before decoding",
               "max_file_bytes": "larger files are refused before they are read"}
# The options of rembg's table, and of "auto"'s for its network.
NETWORK_OPTIONS = {"model": "u2net", "model_path": "", "model_path_sha256": "", "int8": False}
NETWORK_HELP = {
    "model": "one of rembg's networks (`lookalike models` shows its file)",
    "model_path": "an ONNX file of your own (path or https:// URL), instead",
    "model_path_sha256": "required with a URL: the file's sha256",
    "int8": "true: its int8 copy (made by `lookalike quantize`), several times faster",
}
RESNET18_OPTIONS = {"weights": "imagenet", "weights_sha256": "", "backend": "onnxruntime",
                    "cache_dir": "", "int8": False}
RESNET18_HELP = {
    "weights": '"imagenet", or a ResNet-18 state dict: a path or an https:// URL',
    "weights_sha256": "the file's sha256: required with a URL, checked with a path",
    "backend": '"onnxruntime" or "torch"; both give the same vectors',
    "cache_dir": 'where the ONNX export is cached; "" = ~/.cache/lookalike',
    "int8": "true: its int8 copy (made by `lookalike quantize`; onnxruntime backend), "
            "about 1.8x faster on a CPU, vectors slightly moved (its own model id)"}
CLIP_OPTIONS = {"model": DEFAULT_MODEL, "weights": "", "weights_sha256": "",
                "backend": "onnxruntime", "cache_dir": ""}
CLIP_HELP = {
    "model": f"{', '.join(BUILTINS)} (weights pinned and fetched); an open_clip "
             "architecture, optionally with the pretrained tag its weights were trained "
             "as (\"ViT-B-16/laion2b_s34b_b88k\"), given weights; or \"local-dir:DIR\", "
             "a folder with open_clip_config.json and weights (a hub model downloaded)",
    "weights": "the weights file (.safetensors or a state dict): a path or an https:// "
               "URL; \"\" = the built-in model's, fetched",
    "weights_sha256": "the weights file's sha256: required with a URL, checked with a path",
    "backend": '"onnxruntime" or "torch"; both give the same vectors',
    "cache_dir": 'where the ONNX exports are cached; "" = ~/.cache/lookalike'}
HNSW_OPTIONS = {"connectivity": 16, "expansion_add": 128, "expansion_search": 256}
HNSW_HELP = {
    "connectivity": "links per vector in the graph (M): more, closer to exact, more memory",
    "expansion_add": "candidates weighed while adding (ef_construction)",
    "expansion_search": "candidates weighed while searching: higher, closer to exact search, "
                        "slower"}


def _module(name: str) -> ModuleType:
    """The built-in step module ``name``, imported when a step of it is first built."""
    return importlib.import_module(f"{__name__}.{name}")


def _built_by(module: str, factory: str) -> Callable[[StepSettings], Any]:
    """A step's factory: ``factory(settings)`` of the built-in step module ``module``."""
    return lambda settings: getattr(_module(module), factory)(settings)


@hookimpl
def register_decoders(register):
    register("pillow", lambda settings: _module("pillow_decoder").PillowDecoder(
        settings.options["max_pixels"], settings.options["max_file_bytes"]),
        PILLOW_OPTIONS, PILLOW_HELP)


@hookimpl
def register_removers(register):
    register("auto", _built_by("auto_remover", "AutoRemover"), NETWORK_OPTIONS, NETWORK_HELP)
    register("rembg", _built_by("rembg_remover", "RembgRemover"), NETWORK_OPTIONS, NETWORK_HELP)
    register("none", lambda settings: _module("rembg_remover").NoRemover())


@hookimpl
def register_padders(register):
    register("white", lambda settings: _module("white_padder").WhitePadder())


@hookimpl
def register_embedders(register):
    register("resnet18", _built_by("resnet18_embedder", "ResNet18Embedder"), RESNET18_OPTIONS,
             RESNET18_HELP)
    register("clip", _built_by("clip_embedder", "ClipEmbedder"), CLIP_OPTIONS, CLIP_HELP)


@hookimpl
def register_indexes(register):
    register("exact", lambda settings: _module("exact_index").ExactIndex())
    register("hnsw", _built_by("hnsw_index", "built"), HNSW_OPTIONS, HNSW_HELP)
