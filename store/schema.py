"""The schema's version and the values its readers share, without SQLAlchemy: `lookalike
status` reads a SQLite file of this schema with Python's own sqlite3 (store/status.py)."""

# 2: generations, removals; 3: images.removal; 4: claims, nodes; 5: limits, nodes.pid_space;
# 6: nodes.http; 7: model ids stored once; 8: nodes.onnx_providers; 9: an index to count by,
# PostgreSQL's vectors kept in their rows
SCHEMA_VERSION = 9


def is_current(version: str | None, stamped: str | None) -> bool:
    """True for a store whose meta says this schema (``version``) and whose Alembic stamp
    (``stamped``) is this schema's revision: nothing to make or upgrade."""
    return version == str(SCHEMA_VERSION) and stamped == f"{SCHEMA_VERSION:04d}"


# images.status
INDEXED = "indexed"
FAILED = "failed"

# The meta key saying why a rescan forgot nothing (a mass removal held back), or "".
HELD_BACK = "removals_held_back"
