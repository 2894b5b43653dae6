"""Reconciliation: what changed in images_dir while nothing was watching.

A folder that is missing, or that suddenly lacks most of the catalogue (an unmounted share, a
typo in the config), is never read as "every image was deleted": a missing images_dir is an
error, and a rescan that would forget more than ``max_removal_fraction`` of the catalogue at
once holds those removals back until a user confirms them.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from lookalike.base.errors import LookalikeError
from lookalike.daemon.files import scan
from lookalike.daemon.ingest import IngestReport, ingest, is_current
from lookalike.pipeline.pipeline import Pipeline
from lookalike.store.nodes import ThisNode
from lookalike.store.store import Store

log = logging.getLogger(__name__)

HELD_BACK = "removals_held_back"  # store meta key: why a rescan forgot nothing


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


def differences(store: Store, images_dir: Path, model: str, max_removal_fraction: float,
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
    known = store.file_states()
    changed = [path for path, stat in listing.files.items()
               if not is_current(known.get(path), stat, model)]
    gone = [path for path in known if not listing.may_hold(path)]
    if len(gone) > max_removal_fraction * len(known) and not allow_mass_removal:
        reason = (f"{len(gone)} of {len(known)} catalogue images are missing from {images_dir}, "
                  f"more than [daemon] max_removal_fraction ({max_removal_fraction}); they are "
                  "kept: run `lookalike index --allow-mass-removal` to forget them")
        if store.get_meta(HELD_BACK) != reason:
            log.error("removals held back: %s", reason)
            store.set_meta(HELD_BACK, reason)
        gone = []
    elif store.get_meta(HELD_BACK):
        store.set_meta(HELD_BACK, "")
    return Differences(changed, gone, len(listing.files) - len(changed))


def reconcile(
    store: Store,
    pipeline: Pipeline,
    node: ThisNode,
    images_dir: Path,
    batch_size: int,
    max_removal_fraction: float,
    allow_mass_removal: bool = False,
) -> IngestReport:
    """Bring the store in line with images_dir, with a progress bar when stderr is a terminal."""
    found = differences(store, images_dir, pipeline.model_id, max_removal_fraction,
                        allow_mass_removal)
    with progress_bar(len(found.paths)) as bar:
        report = ingest(store, pipeline, images_dir, node, found.paths, batch_size,
                        on_progress=bar.update)
    report.unchanged += found.current
    return report


def progress_bar(total: int):
    """A progress bar on stderr, drawn only when stderr is a terminal."""
    return click.progressbar(length=total, label="indexing", file=sys.stderr, show_pos=True,
                             hidden=not sys.stderr.isatty())


class BacklogProgress:
    """The service's start-up reconciliation, worked off one batch at a time by its loop:
    how much is left, drawn as a progress bar."""

    def __init__(self, total: int):
        self.left = total
        self._bar = progress_bar(total)
        if total:
            self._bar.render_progress()

    def advance(self, count: int) -> bool:
        """Count ``count`` processed files; True when that finished the backlog."""
        if self.left <= 0:
            return False
        done = min(count, self.left)
        self.left -= done
        self._bar.update(done)
        if self.left == 0:
            self._bar.render_finish()
            return True
        return False
