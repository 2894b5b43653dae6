"""Database URLs: which ones name a SQLite file, and how one is shown."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names; None for a database server or an in-memory database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return parsed.database
    return None


def is_server(url: str) -> bool:
    """True for a database server (shared by nodes), False for SQLite."""
    return make_url(url).get_backend_name() != "sqlite"


def masked(url: str) -> str:
    """The database URL as printed and logged: its password hidden."""
    return make_url(url).render_as_string(hide_password=True)
