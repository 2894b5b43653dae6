"""Log output: one line per event, as text for people or JSON for log shippers."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class OneLineFormatter(logging.Formatter):
    """Text lines; newlines inside a message (a file name may hold one) are escaped."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: int = logging.INFO, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else OneLineFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Fetching a model takes a while: every command says which file it fetches from where.
    logging.getLogger("lookalike.models.fetch").setLevel(min(level, logging.INFO))
    # Alembic tells of its set-up on every start; the store logs the upgrades it makes.
    logging.getLogger("alembic").setLevel(logging.WARNING)
