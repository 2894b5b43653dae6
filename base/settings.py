"""Settings declared once: each field of a settings dataclass carries its default, its check and
one line of help. Loading config.toml, `lookalike init`'s template and docs/configuration.md
are all made from these declarations (api/config.py, cli/template.py)."""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

# A check returns what is wrong with a value ("must be positive"), or None when it is fine.
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Declared:
    """What a setting declares besides its name and default."""

    help: str
    check: Check | None = None


def setting(default: Any, help: str, check: Check | None = None) -> Any:
    """A dataclass field that is a setting of config.toml."""
    return field(default=default, metadata={"setting": Declared(help, check)})


@dataclass(frozen=True)
class Declaration:
    """One setting of a table: name, type, default and what it declares."""

    name: str
    kind: Any  # the annotation: bool, int, float, str, Path, or Path | None
    default: Any
    help: str
    check: Check | None


def declarations(table: type) -> list[Declaration]:
    """The settings a settings dataclass declares, in order (fields without a declaration,
    such as derived ones, are not settings)."""
    hints = typing.get_type_hints(table)
    return [Declaration(f.name, hints[f.name], _default(f), f.metadata["setting"].help,
                        f.metadata["setting"].check)
            for f in fields(table) if "setting" in f.metadata]


def _default(f: Field) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()


def toml_default(declaration: Declaration) -> Any:
    """The default as config.toml spells it (a path as a string, no path as "")."""
    default = declaration.default
    if default is None:
        return ""
    return str(default) if isinstance(default, Path) else default


def converted(declaration: Declaration, value: Any, base: Path) -> Any:
    """``value`` as read from TOML, turned into the setting's type (paths relative to
    ``base``) and checked. Raises ValueError with what is wrong ("must be a float")."""
    kind = declaration.kind
    if kind in (Path, Path | None):
        if not isinstance(value, str):
            raise ValueError("must be a str")
        if not value:
            if kind is Path:
                raise ValueError("must not be empty")
            return None
        value = (base / Path(value).expanduser()).resolve()
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif type(value) is not kind:
        raise ValueError(f"must be a {kind.__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value}")
    problem = declaration.check(value) if declaration.check else None
    if problem:
        raise ValueError(problem)
    return value


def positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def within(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"must be from {low} to {high}"


def at_least(low: int) -> Check:
    return lambda value: None if value >= low else f"must be at least {low}"
