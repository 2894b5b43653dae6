"""The [http] table: where and how `lookalike run` answers over HTTP."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lookalike.base.settings import at_least, positive, setting


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
