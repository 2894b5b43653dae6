"""The database's clock: the nodes' own clocks need not agree."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not imported at run time: `lookalike status` reads CLOCK without it
    from sqlalchemy.orm import Session

# Seconds since 1970 by the database's clock, as SQL.
CLOCK = {
    "postgresql": "extract(epoch from clock_timestamp())::float8",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


def database_clock(session: Session) -> float:
    """Seconds since 1970 by the database server's clock."""
    connection = session.connection()
    return connection.exec_driver_sql(f"SELECT {CLOCK[connection.dialect.name]}").scalar()
