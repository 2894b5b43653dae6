"""Reconciliation: what changed in images_dir while nothing was watching.

A folder that is missing, or that suddenly lacks most of the catalogue (an unmounted share, a
typo in the config), is never read as "every image was deleted": a missing images_dir is an
error, and a rescan that would forget more than ``max_removal_fraction`` of the catalogue at
once holds those removals back until a user confirms them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lookalike.base.errors import LookalikeError
from lookalike.base.files import scan
from lookalike.daemon.ingest import is_current
from lookalike.daemon.root import check_no_root_inside
from lookalike.pipeline.pipeline import Pipeline
from lookalike.store.schema import HELD_BACK
from lookalike.store.store import Store

log = logging.getLogger(__name__)



class ImagesDirMissing(LookalikeError):
    """images_dir is not there (or cannot be listed): nothing can be reconciled."""


@dataclass(frozen=True)
class Differences:
    """What a rescan found: files new, changed or embedded by another model; rows whose file
    is gone (empty when held back); how many files are current."""

    changed: list[str]
    gone: list[str]
    current: int

    @property
    def paths(self) -> list[str]:
        return self.changed + self.gone


def differences(store: Store, images_dir: Path, pipeline: Pipeline, max_removal_fraction: float,
                allow_mass_removal: bool = False) -> Differences:
    """Compare images_dir with the store. Raises ImagesDirMissing when it cannot be listed."""
    if not images_dir.is_dir():
        raise ImagesDirMissing(f"images_dir {images_dir} does not exist (an unmounted share?); "
                               "nothing was changed")
    try:
        listing = scan(images_dir)
    except OSError as exc:
        raise ImagesDirMissing(f"cannot list images_dir {images_dir}: {exc.strerror}; "
                               "nothing was changed") from None
    check_no_root_inside(store, images_dir, listing)
    known = store.file_states()
    model, limits = pipeline.model_id, pipeline.limits
    changed = [path for path, stat in listing.files.items()
               if not is_current(known.get(path), stat, model, limits)]
    gone = listing.missing(known)
    # --allow-mass-removal: any share may go (and a hold recorded before is lifted).
    fraction = 1.0 if allow_mass_removal else max_removal_fraction
    gone = held_back(store, images_dir, gone, len(known), fraction)
    return Differences(changed, gone, len(listing.files) - len(changed))


def held_back(store: Store, images_dir: Path, gone: list[str], known: int,
              max_removal_fraction: float) -> list[str]:
    """The mass-removal policy: ``gone`` when it is at most ``max_removal_fraction`` of the
    ``known`` rows, else nothing, and why is recorded in the store (and logged once)."""
    if len(gone) <= max_removal_fraction * known:
        if store.get_meta(HELD_BACK):
            store.set_meta(HELD_BACK, "")
        return gone
    reason = (f"{len(gone)} of {known} catalogue images are missing from {images_dir}, "
              f"more than [daemon] max_removal_fraction ({max_removal_fraction}); they are "
              "kept: run `lookalike index --allow-mass-removal` to forget them")
    if store.get_meta(HELD_BACK) != reason:
        log.error("removals held back: %s", reason)
        store.set_meta(HELD_BACK, reason)
    return []
