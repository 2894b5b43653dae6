"""The [query] table (light: `lookalike --help` imports it for the limit of -k)."""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.base.settings import setting, within

# The most neighbours one query may ask for.
MAX_K = 200


@dataclass(frozen=True)
class QuerySettings:
    k: int = setting(10, f"neighbours in each answer, 1 to {MAX_K}", within(1, MAX_K))
