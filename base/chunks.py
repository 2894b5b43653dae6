"""Long sequences in bounded pieces (SQLite takes a bounded number of parameters a statement)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

# Values bound in one SQL statement's IN (...) or VALUES list: well below every backend's limit.
SQL_CHUNK = 500


def chunks(items: Iterable[T], size: int = SQL_CHUNK) -> Iterator[list[T]]:
    """Consecutive lists of up to ``size`` items."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
