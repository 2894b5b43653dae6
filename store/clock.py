"""The database's clock: the nodes' own clocks need not agree."""

from __future__ import annotations

from sqlalchemy import literal_column, select
from sqlalchemy.orm import Session

CLOCK = {
    "postgresql": "extract(epoch from clock_timestamp())::float8",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


def database_clock(session: Session) -> float:
    """Seconds since 1970 by the database server's clock."""
    return session.scalar(select(literal_column(CLOCK[session.get_bind().dialect.name])))
