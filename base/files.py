"""Which files in the watched folders are images to process, how to list them, and the name
each one is stored and answered under.

The rules are the same for every way a path arrives (the watcher, a rescan, an ingest): dot
names and dot folders are never candidates, folders reached through a symbolic link are never
entered, and a linked file counts only when it resolves to a regular file inside the folder.
"""

from __future__ import annotations

import os
import re
import stat as stat_module
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif",
}
# The inbox also answers text files: their words are the query (a CLIP embedder's).
TEXT_SUFFIX = ".txt"
QUERY_SUFFIXES = IMAGE_SUFFIXES | {TEXT_SUFFIX}
ANSWER_SUFFIX = ".neighbours.json"
# The file that marks a catalogue's root folder (its content: the catalogue's id).
ROOT_MARK = ".lookalike-catalogue"

# A name's bytes that are not UTF-8 reach Python as lone surrogates (U+DC80-U+DCFF).
_NEEDS_ESCAPE = re.compile("[\\\\\udc80-\udcff]")
_ESCAPED = re.compile(r"\\(\\|x[89a-f][0-9a-f])")


def stored_name(name: str) -> str:
    """``name`` (as the os module gives it) as stored, logged and answered.

    A name that is valid UTF-8 stays as it is, except that a backslash is doubled; each byte
    that is not UTF-8 becomes ``\\xNN``. Lossless: ``disk_name`` gives the name back."""
    return _NEEDS_ESCAPE.sub(_escape, name)


def _escape(match: re.Match) -> str:
    char = match.group()
    return "\\\\" if char == "\\" else f"\\x{ord(char) - 0xDC00:02x}"


def disk_name(stored: str) -> str:
    """The name on disk (as the os module takes it) of a stored name."""
    return _ESCAPED.sub(_unescape, stored)


def _unescape(match: re.Match) -> str:
    escape = match.group(1)
    return "\\" if escape == "\\" else chr(0xDC00 + int(escape[1:], 16))


def signature(stat: os.stat_result) -> tuple[int, int, int]:
    """A file is the same file while these are: size, mtime and inode."""
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def changed_since(root: Path, stored: str, stat: os.stat_result) -> bool:
    """True when the image a stored path names is gone or no longer the file of ``stat``."""
    now = image_stat(root, stored)
    return now is None or signature(now) != signature(stat)


def file_path(root: Path, stored: str) -> Path:
    """The file a stored path (relative to ``root``) names."""
    return root / disk_name(stored)


def is_candidate(relative: str, suffixes: set[str] = IMAGE_SUFFIXES) -> bool:
    """True for a path (relative to its watched folder) that names an image to process (a
    query, with ``QUERY_SUFFIXES``)."""
    parts = PurePosixPath(relative).parts
    if not parts or any(part.startswith(".") for part in parts):
        return False
    name = parts[-1]
    if name.startswith("~$") or name.lower().endswith(ANSWER_SUFFIX):
        return False
    # Partial downloads (x.jpg.part, x.jpg.crdownload) fail this until renamed.
    return PurePosixPath(name).suffix.lower() in suffixes


def is_candidate_folder(relative: str) -> bool:
    """True for a folder (relative to images_dir) whose images are candidates."""
    return not any(part.startswith(".") for part in PurePosixPath(relative).parts)


def relative_path(root: Path, path: str | os.PathLike) -> str | None:
    """``path`` relative to ``root``, as stored, or None when it is outside ``root``."""
    try:
        relative = Path(os.path.abspath(path)).relative_to(root)
    except ValueError:
        return None
    return stored_name(relative.as_posix())


def image_stat(root: Path, relative: str) -> os.stat_result | None:
    """The stat of the image a stored path names, when it is a candidate, a regular file (or
    a link to one inside ``root``) and no folder on its way is a link; else None."""
    if not is_candidate(relative):
        return None
    path = file_path(root, relative)
    real_root = os.path.realpath(root)
    try:
        if not _no_linked_folder(root, path.parent.relative_to(root), real_root):
            return None
        found = path.lstat()
        if stat_module.S_ISLNK(found.st_mode):
            target = os.path.realpath(path)
            if not Path(target).is_relative_to(real_root):
                return None
            found = os.stat(target)
    except (OSError, ValueError):
        return None
    return found if stat_module.S_ISREG(found.st_mode) else None


def _no_linked_folder(root: Path, folder: Path, real_root: str) -> bool:
    """True when no folder on the way from ``root`` to ``root/folder`` is a link."""
    return os.path.realpath(root / folder) == os.path.join(real_root, *folder.parts)


@dataclass
class Scan:
    """A listing of a folder: each candidate image (stored path -> stat), the folders that
    could not be listed (their images are unknown, not gone), and the sub-folders that hold
    a catalogue root's mark."""

    files: dict[str, os.stat_result] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)

    def missing(self, stored: Iterable[str]) -> list[str]:
        """The ``stored`` paths that are neither listed nor in a folder that could not be
        listed: a million are compared as sets, in C, not one by one."""
        unlisted = set(stored) - self.files.keys()
        if not self.unreadable:
            return list(unlisted)
        folders = tuple(folder + "/" for folder in self.unreadable)
        return [path for path in unlisted if not path.startswith(folders)]


def scan(root: Path, folder: str = "", recursive: bool = True,
         suffixes: set[str] = IMAGE_SUFFIXES) -> Scan:
    """Every candidate image under ``root`` (or only under its stored sub-folder ``folder``) in
    one walk: os.scandir gives each entry's type without another system call (every query,
    with ``QUERY_SUFFIXES``). Raises OSError when the folder itself cannot be listed."""
    found, real_root = Scan(), os.path.realpath(root)
    prefix = disk_name(folder) + "/" if folder else ""
    if not _no_linked_folder(root, Path(prefix), real_root):
        return found
    _scan_folder(root, prefix, real_root, recursive, suffixes, found, top=True)
    return found


def _scan_folder(root: Path, prefix: str, real_root: str, recursive: bool,
                 suffixes: set[str], found: Scan, top: bool = False) -> None:
    try:
        with os.scandir(os.path.join(root, prefix) if prefix else root) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:
        if top:
            raise
        found.unreadable.append(stored_name(prefix.rstrip("/")))
        return
    for entry in entries:
        if entry.name == ROOT_MARK and prefix:
            found.marked.append(stored_name(prefix.rstrip("/")))
        if entry.name.startswith("."):
            continue
        relative = prefix + entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    _scan_folder(root, relative + "/", real_root, recursive, suffixes, found)
            elif is_candidate(relative, suffixes):
                stat = _image_stat(entry, real_root)
                if stat is not None:
                    found.files[stored_name(relative)] = stat
        except OSError:
            continue  # vanished while listed


def _image_stat(entry: os.DirEntry, real_root: str) -> os.stat_result | None:
    if entry.is_symlink():
        target = os.path.realpath(entry.path)
        if not Path(target).is_relative_to(real_root):
            return None
        stat = os.stat(target)
    else:
        stat = entry.stat(follow_symlinks=False)
    return stat if stat_module.S_ISREG(stat.st_mode) else None
