"""Model files: where each is loaded from, where a missing one is fetched from, its pin."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from lookalike.base.cache import cache_home
from lookalike.base.errors import ModelMissingError
from lookalike.base.settings import positive, setting

# Query parameters that carry credentials (S3 and GCS signed URLs, tokens): shown masked.
SECRET_PARAMETERS = re.compile(r"token|key|secret|password|signature|sig|credential|auth",
                               re.IGNORECASE)


def shown_url(url: str) -> str:
    """``url`` as printed and logged: a user name, a password and credential parameters
    masked (as the database password is)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}=***" if SECRET_PARAMETERS.search(name) else f"{name}={value}" if sep else name
        for name, sep, value in (item.partition("=") for item in parts.query.split("&") if item))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def is_url(value: str) -> bool:
    return urlsplit(value).scheme in ("http", "https", "file")


def _url(value: str) -> str | None:
    if value and not is_url(value):
        return "must be an http://, https:// or file:// URL"
    return None


@dataclass(frozen=True)
class ModelSource:
    """Where missing model files come from (config.toml's [models] table): upstream or
    ``mirror`` (``<mirror><file name>``), never when ``fetch`` is off; ``dir`` holds files
    carried in by hand and is looked in first."""

    dir: Path | None = setting(None, "a folder of model files carried in by hand, looked in "
                               "first")
    mirror: str = setting("", "fetch from here instead of upstream, e.g. "
                          "https://models.internal/lookalike/ or file:///mnt/models/", _url)
    fetch: bool = setting(True, "false: never touch the network (as --offline)")
    timeout_seconds: float = setting(60.0, "a server silent this long fails the fetch",
                                     positive)
    cache_dir: Path = field(default_factory=lambda: cache_home() / "lookalike" / "models")

    def place(self, name: str, default: Path) -> Path:
        """Where the file called ``name`` is loaded from: ``dir`` when it is there, else
        ``default`` (where a fetch puts it)."""
        if self.dir is not None and (self.dir / name).is_file():
            return self.dir / name
        return default


@dataclass(frozen=True)
class ModelFile:
    """A file a step loads: where it is loaded from, how a user supplies it, and, when it can
    be fetched, its URL and the digest it must have (``md5:<hex>``, or ``sha256:<hex>`` of
    at least 8 digits: upstream's prefix or the whole digest)."""

    step: str
    path: Path
    how_to_supply: str
    url: str | None = None
    pin: str | None = None
    source: ModelSource = ModelSource()

    @property
    def present(self) -> bool:
        return self.path.is_file()

    def sha256(self) -> str:
        return file_digest(self.path, "sha256")

    def matches_pin(self) -> bool | None:
        """Whether the file on disk has the pinned digest; None when nothing is pinned."""
        if self.pin is None:
            return None
        algorithm, expected = self.pin.split(":")
        return file_digest(self.path, algorithm).startswith(expected)

    def required(self, what: str) -> ModelFile:
        """This file, verified; fetched first when it is missing and may be. Otherwise
        ModelMissingError naming ``what``, where it belongs and how to get it."""
        if not self.present and self.url is not None and self.source.fetch:
            from lookalike.models.fetch import fetch

            fetch(self)
        if not self.present:
            raise ModelMissingError(f"{what} not found at {self.path}: {self.how_to_supply}")
        if self.matches_pin() is False:
            raise ModelMissingError(f"{what} at {self.path} does not have the pinned digest "
                                    f"{self.pin}: delete it to fetch it again")
        return self


def file_digest(path: Path, algorithm: str) -> str:
    """The file's digest, computed once while its size and mtime stay the same: a start checks
    the pin and makes the model id from the same file (a 168 MB u2net is not read twice)."""
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns, algorithm)


@lru_cache(maxsize=64)
def _digest(path: Path, size: int, mtime_ns: int, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


