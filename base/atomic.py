"""Write files others read so that they never see half of one."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_NAME_BYTES = 100


def umask() -> int:
    """The process's umask (Linux says it in /proc; elsewhere it is set and put back)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A new, hidden temp file beside ``path`` for the block to fill (made exclusively, so a
    planted link is never followed); on success it is fsynced, given the mode a new file
    gets under the umask (as pip and curl do: mkstemp's 0600 would lock out the service's
    user from a model fetched as root), and renamed into place; on failure (the block
    raised, Ctrl-C, SIGTERM) removed."""
    # Named after the file, cut so that a name near the filesystem's limit still fits.
    prefix = "." + os.fsdecode(os.fsencode(path.name)[:TEMP_NAME_BYTES]) + "."
    fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    temp = Path(temp_name)
    try:
        yield temp
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temp, 0o666 & ~umask())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """``atomic_path`` opened for writing: large content is streamed in, not built in memory."""
    with atomic_path(path) as temp, open(temp, "wb") as file:
        yield file


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_file(path) as file:
        file.write(data)
