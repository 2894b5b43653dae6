"""The CLIP models lookalike knows by name, with their pinned weights (data only: the config
reads the names without loading the embedder)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Builtin:
    """A model lookalike knows: open_clip's architecture config, the pretrained tag whose
    preprocessing its weights were trained with, and where its pinned weights come from."""

    architecture: str
    tag: str
    url: str
    sha256: str
    file_name: str  # in [models] dir, a mirror and `models --fetch --to`: unique per model


HUB = "https://huggingface.co/{repo}/resolve/main/open_clip_model.safetensors"
BUILTINS = {
    "hf-hub:Marqo/marqo-fashionCLIP": Builtin(
        "ViT-B-16", "laion2b_s34b_b88k", HUB.format(repo="Marqo/marqo-fashionCLIP"),
        "2bd31a2e6ba195c4890941f61ea6ada9dbf242f9c6e5ee27eec8cf13a2dc9ffe",
        "marqo-fashionCLIP.safetensors"),
    "hf-hub:Marqo/marqo-fashionSigLIP": Builtin(
        "ViT-B-16-SigLIP", "webli", HUB.format(repo="Marqo/marqo-fashionSigLIP"),
        "88908200434959fa3154ef79d408aac33341e8797fe5ca8ca6f0463aab32e6b3",
        "marqo-fashionSigLIP.safetensors"),
    # A general model (not trained on fashion) beside them: LAION's ViT-B-32.
    "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K": Builtin(
        "ViT-B-32", "laion2b_s34b_b79k", HUB.format(repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
        "ac4f8c4b88af6d963118cbf40ad93176d092abbedfcb752601ae1866352656e6",
        "CLIP-ViT-B-32-laion2B-s34B-b79K.safetensors"),
}
DEFAULT_MODEL = "hf-hub:Marqo/marqo-fashionCLIP"
