"""Fetching a missing model file: from its URL or the configured mirror, into a temporary file
beside its destination, renamed into place only once its digest matched the pin.

HTTP is streamed with requests (a tqdm progress bar on a terminal; the response is closed
however the transfer ends); a ``file://`` mirror is copied. Nothing half-fetched or unverified
is ever left where a later run would load it, also when the transfer breaks or Ctrl-C stops it.
"""

from __future__ import annotations

import http.client
import logging
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from lookalike.base.atomic import atomic_path
from lookalike.base.errors import ModelMissingError
from lookalike.models.files import ModelFile, file_digest

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


def fetch(file: ModelFile, destination: Path | None = None) -> Path:
    """Fetch ``file`` to ``destination`` (default: where it is loaded from); returns it."""
    destination = destination or file.path
    url = source_url(file)
    destination.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s from %s", destination.name, url)
    try:
        # Removed after a failure or Ctrl-C; renamed into place only once verified.
        with atomic_path(destination, ".partial") as partial:
            with open(partial, "wb") as output:
                _download(url, output, file.source.timeout_seconds)
            _check(file, url, partial)
    except OSError as exc:
        raise ModelMissingError(f"cannot fetch {url}: {_reason(exc)}") from None
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
    """``<mirror><file name>`` when a mirror is configured, else the file's own URL."""
    mirror = file.source.mirror
    if not mirror:
        return file.url
    return mirror.rstrip("/") + "/" + PurePosixPath(urlsplit(file.url).path).name


def _download(url: str, output: BinaryIO, timeout: float) -> None:
    parts = urlsplit(url)
    if parts.scheme == "file":
        with open(unquote(parts.path), "rb") as source:
            shutil.copyfileobj(source, output, CHUNK_BYTES)
        return
    import requests
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread left running after the bar
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            size = int(response.headers.get("content-length", 0)) or None
            with tqdm(total=size, unit="B", unit_scale=True, file=sys.stderr,
                      disable=not sys.stderr.isatty()) as progress:
                for chunk in response.iter_content(CHUNK_BYTES):
                    output.write(chunk)
                    progress.update(len(chunk))
    except requests.HTTPError as exc:
        raise OSError(f"{exc.response.status_code} {exc.response.reason}") from None
    except requests.Timeout:
        raise OSError(f"no answer within {timeout:g} s ([models] timeout_seconds)") from None
    except requests.RequestException as exc:
        raise OSError(_innermost(exc)) from None


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
            f"{url}: expected {algorithm} {expected}, received {received}; nothing was kept")
