"""Fetching a missing model file: from its URL or the configured mirror, into a temporary file
beside its destination, renamed into place only once its digest matched the pin.

HTTP is streamed with requests (a tqdm progress bar on a terminal; the response is closed
however the transfer ends); a ``file://`` mirror is copied. Nothing half-fetched or unverified
is ever left where a later run would load it, also when the transfer breaks or Ctrl-C or
SIGTERM stops it. A transfer is bounded: never more than the server declared nor more than
``MAX_MODEL_BYTES``, and a server that trickles (slower than ``MIN_BYTES_PER_SECOND`` once
``timeout_seconds`` passed) is given up. URLs are shown with their credentials masked.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import stat
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from lookalike.base.atomic import atomic_path
from lookalike.base.errors import ModelMissingError
from lookalike.models.files import ModelFile, file_digest, shown_url

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# No model lookalike knows is near this (BiRefNet's largest ONNX file is under 1 GB): a mirror
# that serves without end (a link to /dev/zero) stops here instead of filling the disk.
MAX_MODEL_BYTES = 4 << 30
# After [models] timeout_seconds, a transfer must have averaged this much: a server that
# sends a byte a second never trips the per-read timeout, and is given up by this.
MIN_BYTES_PER_SECOND = 32 << 10


def fetch(file: ModelFile, destination: Path | None = None) -> Path:
    """Fetch ``file`` to ``destination`` (default: where it is loaded from); returns it."""
    destination = destination or file.path
    url = source_url(file)
    log.info("fetching %s from %s", destination.name, shown_url(url))
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelMissingError(f"cannot fetch {shown_url(url)}: cannot make the folder "
                                f"{destination.parent}: {_reason(exc)}") from None
    try:
        # Removed after a failure, Ctrl-C or SIGTERM; renamed into place once verified.
        with atomic_path(destination, ".partial") as partial:
            with open(partial, "wb") as output:
                _download(url, output, file.source.timeout_seconds)
            _check(file, url, partial)
    except OSError as exc:
        where = "" if exc.filename is None else f" ({exc.filename})"
        raise ModelMissingError(f"cannot fetch {shown_url(url)}: {_reason(exc)}{where}") from None
    log.info("fetched %s (sha256 %s)", destination, file_digest(destination, "sha256"))
    return destination


def copy_verified(file: ModelFile, destination: Path) -> None:
    """``file`` at ``destination`` too (to carry to another machine): copied from where it is
    loaded when that copy is sound, else fetched; verified either way."""
    if replace(file, path=destination).present:
        replace(file, path=destination).required(f"{destination.name}")
        return
    if file.present and file.matches_pin() is not False:
        local = replace(file, url=file.path.resolve().as_uri(),
                        source=replace(file.source, mirror=""))
        fetch(local, destination)
    elif file.url is not None and file.source.fetch:
        fetch(file, destination)
    else:
        file.required(f"{file.step} model file")  # says why it cannot be had


def source_url(file: ModelFile) -> str:
    """``<mirror><file name>`` when a mirror is configured (the name it is loaded under, as
    in [models] dir: two models' files of one upstream name differ there), else the file's
    own URL."""
    mirror = file.source.mirror
    if not mirror:
        return file.url
    return mirror.rstrip("/") + "/" + file.path.name


def _download(url: str, output: BinaryIO, timeout: float) -> None:
    parts = urlsplit(url)
    if parts.scheme == "file":
        _copy_file(unquote(parts.path), output)
        return
    import requests
    import urllib3
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread left running after the bar
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            declared = int(response.headers.get("content-length", 0)) or None
            limit = _limit(declared)
            started, received = time.monotonic(), 0
            with tqdm(total=declared, unit="B", unit_scale=True, file=sys.stderr,
                      disable=not sys.stderr.isatty()) as progress:
                # read1 returns what has arrived: each chunk is checked against the bounds.
                while chunk := response.raw.read1(CHUNK_BYTES):
                    received += len(chunk)
                    if received > limit:
                        raise OSError(f"the server sent more than {limit:,} bytes")
                    elapsed = time.monotonic() - started
                    if elapsed > timeout and received < MIN_BYTES_PER_SECOND * elapsed:
                        raise OSError(f"{received:,} bytes in {elapsed:.0f} s, slower than "
                                      f"{MIN_BYTES_PER_SECOND >> 10} KiB/s")
                    output.write(chunk)
                    progress.update(len(chunk))
    except requests.HTTPError as exc:
        raise OSError(f"{exc.response.status_code} {exc.response.reason}") from None
    except requests.Timeout:
        raise OSError(f"no answer within {timeout:g} s ([models] timeout_seconds)") from None
    except requests.RequestException as exc:
        raise OSError(_innermost(exc)) from None
    except urllib3.exceptions.HTTPError as exc:
        raise OSError(_innermost(exc)) from None


def _limit(declared: int | None) -> int:
    if declared is not None and declared > MAX_MODEL_BYTES:
        raise OSError(f"the server offers {declared:,} bytes, more than a model file may be "
                      f"({MAX_MODEL_BYTES:,})")
    return declared or MAX_MODEL_BYTES


def _copy_file(path: str, output: BinaryIO) -> None:
    """A mirror's file, copied when it is a regular file no larger than a model may be."""
    with open(path, "rb") as source:
        size = os.fstat(source.fileno())
        if not stat.S_ISREG(size.st_mode):
            raise OSError(f"{path} is not a regular file")
        _limit(size.st_size)
        shutil.copyfileobj(source, output, CHUNK_BYTES)


def _innermost(exc: BaseException) -> str:
    """The root cause of a requests error, without its wrappers' repetition of the URL."""
    while exc.__context__ is not None or exc.__cause__ is not None:
        exc = exc.__cause__ or exc.__context__
    if isinstance(exc, http.client.IncompleteRead):  # urllib3 counts what it read
        read = exc.partial if isinstance(exc.partial, int) else len(exc.partial)
        return f"the connection closed after {read:,} bytes, {exc.expected:,} more expected"
    match = re.search(r"\[Errno -?\d+\][^')\"]*", str(exc))
    return match.group() if match else f"{type(exc).__name__}: {exc}"


def _reason(exc: OSError) -> str:
    return " ".join((exc.strerror or str(exc)).split())


def _check(file: ModelFile, url: str, fetched: Path) -> None:
    if file.pin is None:
        return  # a file of the user's own, copied as it is
    algorithm, expected = file.pin.split(":")
    received = file_digest(fetched, algorithm)
    if not received.startswith(expected):
        raise ModelMissingError(
            f"{shown_url(url)}: expected {algorithm} {expected}, received {received}; nothing "
            "was kept")
