"""Write files others read so that they never see half of one."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_NAME_BYTES = 100


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A hidden temp file beside ``path``; on success it is fsynced and renamed into place,
    on failure removed. Large content can be streamed into it instead of built in memory."""
    # Named after the file, cut so that a name near the filesystem's limit still fits.
    prefix = "." + os.fsdecode(os.fsencode(path.name)[:TEMP_NAME_BYTES]) + "."
    fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as temp:
            yield temp
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_file(path) as file:
        file.write(data)
