"""The cheap cut-out of a photo on a plain studio background (white, grey, a smooth gradient).

The background is modelled from the photo's border: a quadratic per colour channel, fitted
robustly (a garment may touch the border). Where the border does not fit it closely, the
background is textured and the photo is declined (the network must decide). Otherwise the
background is every pixel close to the model, or in its soft shadow, that is connected to the
border; enclosed holes of background colour (a bag's handle) are background too; small specks
and holes are cleaned. All of it runs on a copy at most WORK_SIDE pixels wide: a few ms.
scipy is imported where it is used, not with the module: every command loads this plugin to
read its config, and most never cut out a photo.

Where the cut would be a guess the photo is declined too: enclosed regions of the background's
colour larger than a few percent of the garment are more often garment (a grey panel on grey, a
garment drawn only by its outline) than background seen through it (a bag's handle: the network
decides those).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

VERSION = 2  # raise with any change that can change a mask: it is part of the step id
WORK_SIDE = 256  # the mask is found at this size (longest side), then scaled to the photo
FOUR_NEIGHBOURS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


@dataclass(frozen=True)
class PlainBackground:
    """The thresholds, in 0–255 levels at the working size."""

    max_noise: float = 4.0  # the border's robust spread around its fit: more is texture
    min_border_share: float = 0.8  # at least this share of the border must be background
    min_distance: float = 14.0  # colour distance from the background that is garment for sure
    max_shadow_step: float = 8.0  # a shadow darkens smoothly: steeper steps are an edge
    min_shadow_ratio: float = 0.5  # shadows keep at least half the background's light
    max_shadow_width: float = 0.06  # shadows reach this far (a share of the side) from background
    max_shadow_tint: float = 0.08  # a shadow keeps the background's chromaticity
    min_hole_share: float = 0.003  # enclosed background larger than this is a hole
    max_hole_share: float = 0.04  # holes over this share of the garment: perhaps garment
    min_edge_step: float = 12.0  # a step this large is an edge
    max_edge_share: float = 0.0005  # more edge pixels than this away from the garment: declined
    max_soft_outline: float = 0.1  # more of the outline than this without an edge: declined
    foreground_shares: tuple[float, float] = (0.002, 0.9)  # outside: the photo is declined

    def mask(self, image: Image.Image) -> Image.Image | None:
        """The garment's mask ("L", the photo's size, 255 = garment), or None when the
        background is not plain enough to be cut out without a network."""
        work = image.convert("RGB")
        work.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
        # Channels first: sums over a channel are additions of whole planes, not slow
        # reductions over an axis of three.
        pixels = np.moveaxis(np.asarray(work, dtype=np.float32), 2, 0).copy()
        background = self._background(pixels)
        if background is None:
            return None
        model, noise, border_inliers = background
        step = largest_step(pixels.sum(axis=0) / 3)
        found = self._foreground(pixels, model, noise, step, border_inliers)
        if found is None:
            return None
        foreground, distance = found
        share = foreground.mean()
        if not self.foreground_shares[0] <= share <= self.foreground_shares[1]:
            return None
        if self._edges_left_in_background(foreground, step) or self._soft_outline(foreground,
                                                                                    step):
            return None
        foreground &= half_covered(foreground, distance)
        small = Image.fromarray(foreground.astype(np.uint8) * 255)
        return small.resize(image.size, Image.Resampling.BILINEAR)

    def _background(self, pixels: np.ndarray):
        """(the background's colour at each pixel, its noise, the border's background pixels),
        or None when the border is textured or mostly not background."""
        _, height, width = pixels.shape
        band = max(2, round(0.02 * min(height, width)))
        border = np.zeros((height, width), dtype=bool)
        border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
        terms = quadratic_terms(height, width)
        colours, border_terms = pixels[:, border].T, terms[:, border].T
        inliers = np.linalg.norm(colours - np.median(colours, axis=0), axis=1) <= 48
        for _ in range(3):  # refit on the pixels that fit: a garment on the border drops out
            if inliers.sum() < 16:
                return None
            coefficients = np.linalg.lstsq(border_terms[inliers], colours[inliers], rcond=None)[0]
            residual = np.linalg.norm(colours - border_terms @ coefficients, axis=1)
            noise = 1.4826 * float(np.median(residual[inliers]))
            inliers = residual <= max(4 * noise, 3.0)
        if noise > self.max_noise or inliers.mean() < self.min_border_share:
            return None
        on_border = np.zeros_like(border)
        on_border[border] = inliers
        return np.tensordot(coefficients.T, terms, axes=1), noise, on_border

    def _foreground(self, pixels, model, noise, step, border_inliers):
        """Everything not reachable from the border through background or its soft shadow,
        less the large enclosed holes of background colour, specks cleaned away; and each
        pixel's colour distance from the background. None when the cut would be a guess:
        holes too large to be only background."""
        from scipy import ndimage
        difference = pixels - model
        distance = np.sqrt((difference * difference).sum(axis=0))
        close = distance <= max(self.min_distance, 4 * noise)
        near = ndimage.distance_transform_cdt(~close) <= self.max_shadow_width * max(close.shape)
        reachable = close | (self._shadow_coloured(pixels, model) & near
                             & (step <= self.max_shadow_step))
        labels, _ = ndimage.label(reachable, FOUR_NEIGHBOURS)
        touching = np.unique(labels[border_inliers & reachable])
        foreground = ~np.isin(labels, touching[touching > 0])
        holes = regions_at_least(close & foreground, self.min_hole_share * foreground.size)
        if holes.sum() > self.max_hole_share * foreground.sum():
            return None
        foreground = ndimage.binary_opening(foreground & ~holes)
        return regions_at_least(foreground, self.min_hole_share * foreground.size), distance

    def _shadow_coloured(self, pixels: np.ndarray, model: np.ndarray) -> np.ndarray:
        """Pixels that are the background darkened, keeping its tint."""
        light, model_light = pixels.sum(axis=0) + 1, model.sum(axis=0) + 1
        ratio = light / model_light
        tint = np.abs(pixels / light - model / model_light).max(axis=0)
        return (ratio >= self.min_shadow_ratio) & (ratio <= 1) & (tint <= self.max_shadow_tint)

    def _edges_left_in_background(self, foreground: np.ndarray, step: np.ndarray) -> bool:
        """The self-check: a plain background has no edges away from the garment's outline.
        Edges there are texture, or a garment of the background's colour only partly found."""
        from scipy import ndimage
        away = ~ndimage.binary_dilation(foreground, iterations=4)  # JPEG rings near edges
        edges = int((away & (step > self.min_edge_step)).sum())
        return edges > self.max_edge_share * foreground.size

    def _soft_outline(self, foreground: np.ndarray, step: np.ndarray) -> bool:
        """The other self-check: a garment's outline is an edge. An outline without one runs
        through a flat region, where the garment and the background (or its shadow) meet in
        one colour: the cut is a guess there."""
        from scipy import ndimage
        outline = foreground & ~ndimage.binary_erosion(foreground)
        sharp = ndimage.maximum_filter(step, size=3) > self.min_edge_step / 2
        return (outline & ~sharp).sum() > self.max_soft_outline * outline.sum()


def half_covered(foreground: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """False on the outline's pixels that the garment covers less than half of: a mixed pixel
    is as far from the background as the share the garment covers, so it is compared with
    the garment next to it. (Any distance over the threshold would count it whole, and every
    outline would sit a third of a pixel too far out.)"""
    from scipy import ndimage
    outline = foreground & ~ndimage.binary_erosion(foreground)
    garment_nearby = ndimage.maximum_filter(distance, size=5)
    return ~outline | (distance >= 0.5 * garment_nearby)


def largest_step(level: np.ndarray) -> np.ndarray:
    """The largest difference of each pixel's level to one of its four neighbours."""
    step = np.zeros_like(level)
    across_rows, across_columns = np.abs(np.diff(level, axis=0)), np.abs(np.diff(level, axis=1))
    step[1:] = np.maximum(step[1:], across_rows)
    step[:-1] = np.maximum(step[:-1], across_rows)
    step[:, 1:] = np.maximum(step[:, 1:], across_columns)
    step[:, :-1] = np.maximum(step[:, :-1], across_columns)
    return step


@lru_cache(maxsize=16)
def quadratic_terms(height: int, width: int) -> np.ndarray:
    """(6, height, width): 1, x, y, x², xy, y² at each pixel, x and y in [-1, 1]."""
    y, x = np.mgrid[-1:1:height * 1j, -1:1:width * 1j].astype(np.float32)
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y])
    terms.flags.writeable = False  # shared between calls
    return terms


def regions_at_least(mask: np.ndarray, min_size: float) -> np.ndarray:
    """The connected regions of ``mask`` of at least ``min_size`` pixels."""
    from scipy import ndimage
    labels, count = ndimage.label(mask, FOUR_NEIGHBOURS)
    if not count:
        return mask
    keep = np.bincount(labels.ravel()) >= min_size
    keep[0] = False
    return keep[labels]
