"""Remover "auto": a photo on a plain background is cut out by its colour in a few ms; any
other goes to rembg's network, as remover "rembg" would send it."""

from __future__ import annotations

from functools import cached_property

from PIL import Image

from lookalike.models.files import ModelFile
from lookalike.pipeline.builtins.plain_background import VERSION, PlainBackground
from lookalike.pipeline.builtins.rembg_remover import RembgRemover
from lookalike.pipeline.imaging import WHITE, on_white
from lookalike.pipeline.steps import StepSettings

PLAIN = f"plain@{VERSION}"  # the way a plain background is removed, as rows record it


class AutoRemover:
    network: RembgRemover  # for the photos that are not on a plain background
    runs_onnx = True

    def __init__(self, settings: StepSettings):
        self.network = RembgRemover(settings, table="auto")
        self._plain = PlainBackground()

    @cached_property
    def id(self) -> str:
        """Both ways: vectors of "auto" are never compared with those of "rembg" alone."""
        return f"auto:{PLAIN}|{self.network.id}"

    def model_files(self) -> list[ModelFile]:
        return self.network.model_files()

    def remove(self, image: Image.Image) -> Image.Image:
        """The cut-out on white; ``info["removal"]`` names the way taken (a step id)."""
        flat = on_white(image)  # a transparent background is a plain white one
        mask = self._plain.mask(flat)
        if mask is None:
            cutout, removal = self.network.remove(image), self.network.id
        else:
            cutout, removal = Image.composite(flat, Image.new("RGB", flat.size, WHITE),
                                              mask), PLAIN
        cutout.info["removal"] = removal
        return cutout
