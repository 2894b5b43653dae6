"""Database URLs: which ones name a SQLite file, and how one is shown.

Read with the grammar of SQLAlchemy's ``make_url`` but without importing SQLAlchemy (a third
of a second): loading the config and `lookalike status` need no more than this.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, unquote

from lookalike.base.errors import LookalikeError

# sqlalchemy.engine.url._parse_url's pattern.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


def _parsed(url: str) -> re.Match:
    match = _URL.match(url)
    if match is None:
        raise LookalikeError(f"database {url!r} is not a SQLAlchemy URL")
    return match


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names; None for a database server or an in-memory database."""
    parsed = _parsed(url)
    database = parsed["database"]
    if parsed["name"].split("+")[0] == "sqlite" and database not in (None, "", ":memory:"):
        return unquote(database)
    return None


def is_server(url: str) -> bool:
    """True for a database server (shared by nodes), False for SQLite."""
    return _parsed(url)["name"].split("+")[0] != "sqlite"


def database_exists(url: str) -> bool:
    """False for a SQLite file that is not there yet; a server's database is assumed."""
    file = sqlite_file(url)
    return file is None or Path(file).exists()


def with_sqlite_file(url: str, file: str) -> str:
    """``url`` naming the SQLite file ``file`` instead (its query string kept)."""
    parsed = _parsed(url)
    start, end = parsed.span("database")
    return url[:start] + quote(file, safe=" +/") + url[end:]


def masked(url: str) -> str:
    """The database URL as printed and logged: its password hidden."""
    parsed = _parsed(url)
    if parsed["password"] is None:
        return url
    start, end = parsed.span("password")
    return url[:start] + "***" + url[end:]
