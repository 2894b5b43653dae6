"""The settings of the service: the top level of config.toml (its folders, snapshot and
database), the [daemon] table and the [http] table."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lookalike.base.settings import at_least, not_negative, positive, setting, within


@dataclass(frozen=True)
class Catalogue:
    """The top level of config.toml; paths are relative to the config file."""

    images_dir: Path = setting(Path("images"), "the catalogue's photos, watched with every "
                               "sub-folder")
    inbox_dir: Path = setting(Path("inbox"), "query photos dropped here get a "
                              "<name>.neighbours.json beside them")
    snapshot: Path = setting(Path("feature_vectors.pkl"), "the snapshot of every vector "
                             "(with a .npy and a .json beside it), rewritten after changes")
    database: str = setting("sqlite:///lookalike.db", "a SQLAlchemy URL: a SQLite file "
                            "(relative to this file) or postgresql+psycopg://... for several "
                            "machines")
    database_timeout_seconds: float = setting(15.0, "PostgreSQL: the longest a node waits for "
                                              "another's lock, and the longest a transaction "
                                              "may sit idle before the server ends it (a "
                                              "paused node's locks are freed after it)",
                                              positive)


@dataclass(frozen=True)
class DaemonSettings:
    """The [daemon] table: how `lookalike run` paces its work."""

    settle_seconds: float = setting(1.0, "a file is taken once its size and mtime stayed the "
                                    "same this long", not_negative)
    batch_size: int = setting(16, "images embedded together", at_least(1))
    polling: bool = setting(False, "true: poll the folders instead of inotify (network "
                            "filesystems)")
    rescan_seconds: float = setting(600.0, "a full rescan this often, a safety net for missed "
                                    "events", positive)
    max_removal_fraction: float = setting(0.5, "a rescan missing more of the catalogue than "
                                          "this forgets nothing (an unmounted share)",
                                          within(0, 1))
    lease_seconds: float = setting(60.0, "work of a node not heard from this long goes to "
                                   "another", positive)
    refresh_seconds: float = setting(30.0, "during a long ingest the snapshot is rewritten at "
                                     "most this often (at once when idle)", positive)
    retry_seconds: float = setting(5.0, "a snapshot or answer that could not be written is "
                                   "tried again after this long", positive)


def address(listen: str) -> tuple[str, int]:
    """(host, port) of "host:port" ("[::1]:8765" for IPv6); ValueError when it is not one."""
    host, colon, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'must be "host:port", such as "127.0.0.1:8765", not {listen!r}')
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen_check(listen: str) -> str | None:
    try:
        if listen:
            address(listen)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class HttpSettings:
    """The [http] table."""

    listen: str = setting("", '"host:port" that `lookalike run` answers HTTP on, such as '
                          '"127.0.0.1:8765"; "" for none. Any address but loopback needs a '
                          'token', _listen_check)
    token: str = setting("", "the bearer token every route but /healthz asks for "
                         "(Authorization: Bearer ...); required beyond loopback")
    max_upload_bytes: int = setting(20_000_000, "a query image larger than this is refused "
                                    "(413) before it is read", at_least(1))
    max_concurrent_embeddings: int = setting(2, "query images embedded at once; more are "
                                             "refused with 503 and Retry-After", at_least(1))
    request_timeout_seconds: float = setting(30.0, "the longest a request may take, its "
                                             "upload included", positive)

    def refusal(self) -> str | None:
        """Why `run` must not serve with these settings, or None."""
        if self.listen and not self.token and not is_loopback(address(self.listen)[0]):
            return (f"[http] listen = {self.listen!r} is not a loopback address: set "
                    "[http] token, which every client must then send")
        return None
