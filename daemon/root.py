"""The catalogue's root: the one images_dir every node of a store watches.

Stored paths are relative to images_dir, so a node watching a folder inside another node's
(``share/tops`` beside ``share``) reads every row as gone or misplaced and undoes the other's
work at each rescan. The first node of a store marks its images_dir with the catalogue's id
(``.lookalike-catalogue``); a node whose images_dir lies inside a marked folder, or holds one,
is refused in one line. A folder with no mark at all (an unmounted share, another mount
point) is not refused: the mass-removal policy protects the rows.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from lookalike.base.atomic import write_atomically
from lookalike.base.errors import ConfigError
from lookalike.base.files import ROOT_MARK, Scan, file_path
from lookalike.store.store import ROOT_KEY, Store

log = logging.getLogger(__name__)


def take_root(store: Store, images_dir: Path) -> None:
    """Check that ``images_dir`` does not lie inside the catalogue's root; the first node of
    the store marks its images_dir as the root."""
    proposed = uuid.uuid4().hex
    catalogue = store.meta_once(ROOT_KEY, proposed)
    for folder in images_dir.parents:
        if _mark_of(folder) == catalogue:
            raise ConfigError(
                f"images_dir {images_dir} lies inside {folder}, this catalogue's root (another "
                f"node watches it): set images_dir to {folder}, or delete {folder / ROOT_MARK} "
                "if the catalogue has moved")
    if catalogue == proposed and images_dir.is_dir():
        try:
            write_atomically(images_dir / ROOT_MARK, f"{catalogue}\n".encode())
        except OSError as exc:
            log.warning("cannot mark %s as the catalogue's root: %s", images_dir, exc.strerror)


def check_no_root_inside(store: Store, images_dir: Path, listing: Scan) -> None:
    """Refuse an images_dir that holds the catalogue's root in a sub-folder."""
    catalogue = store.get_meta(ROOT_KEY)
    for folder in listing.marked:
        inner = file_path(images_dir, folder)
        if catalogue is not None and _mark_of(inner) == catalogue:
            raise ConfigError(
                f"images_dir {images_dir} holds {inner}, this catalogue's root (another node "
                f"watches it): set images_dir to {inner}, or delete {inner / ROOT_MARK} if the "
                "catalogue has moved")


def _mark_of(folder: Path) -> str | None:
    try:
        return (folder / ROOT_MARK).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
