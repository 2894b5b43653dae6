"""The [pipeline] table (light: reading the config imports it, and no step)."""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.base.settings import setting


@dataclass(frozen=True)
class PipelineSteps:
    """The [pipeline] table: the plugin chosen for each step (`lookalike plugins` lists them)."""

    decoder: str = setting("pillow", "turns a file's bytes into an image")
    remover: str = setting("auto", '"auto": plain backgrounds cut by colour, other photos by '
                           '[auto]\'s network; "rembg": the network on every photo; "none"')
    padder: str = setting("white", "pads the cut-out to a square")
    embedder: str = setting("resnet18", 'turns the square into a unit vector: "resnet18", or '
                            '"clip" (a fashion-trained CLIP model; search by words too)')
    index: str = setting("exact", '"exact", or "hnsw": approximate, for catalogues of '
                         'millions')
