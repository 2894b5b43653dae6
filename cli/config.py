"""config.toml: defaults, validation (unknown keys are errors) and path resolution."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from lookalike.base.errors import ConfigError
from lookalike.cli.limits import MAX_K
from lookalike.models.files import ModelSource, is_url
from lookalike.pipeline.plugins import StepPlugin
from lookalike.store.urls import sqlite_file

CONFIG_ENV = "LOOKALIKE_CONFIG"

DEFAULTS: dict[str, Any] = {
    "images_dir": "images",
    "inbox_dir": "inbox",
    "snapshot": "feature_vectors.pkl",
    "database": "sqlite:///lookalike.db",
    "pipeline": {
        "decoder": "pillow", "remover": "auto", "padder": "white", "embedder": "resnet18",
        "index": "exact",
    },
    "query": {"k": 10},
    "models": {"dir": "", "mirror": "", "fetch": True, "timeout_seconds": 60.0},
    "daemon": {"settle_seconds": 1.0, "batch_size": 16, "polling": False, "rescan_seconds": 600.0,
               "max_removal_fraction": 0.5, "lease_seconds": 60.0},
}


@dataclass(frozen=True)
class Config:
    path: Path
    images_dir: Path
    inbox_dir: Path
    snapshot: Path
    database_url: str
    pipeline: dict[str, str]
    k: int
    settle_seconds: float
    batch_size: int
    polling: bool
    rescan_seconds: float
    max_removal_fraction: float
    lease_seconds: float
    models: ModelSource
    tables: dict[str, dict[str, Any]]

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def config_path(option: str | None) -> Path:
    """--config, else $LOOKALIKE_CONFIG, else ./config.toml."""
    path = Path(option or os.environ.get(CONFIG_ENV) or "config.toml").expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: run `lookalike init` to make one, or "
                          f"use --config or {CONFIG_ENV}")
    return path.resolve()


def load_config(path: Path, steps: dict[str, dict[str, StepPlugin]]) -> Config:
    """Read and validate ``path``; plugin tables are checked against their plugin's options."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    plugin_options = {name: p.options for named in steps.values() for name, p in named.items()}
    core_tables = {key for key, value in DEFAULTS.items() if isinstance(value, dict)}
    tables = {
        key: _checked(path, key, value, plugin_options[key])
        for key, value in raw.items()
        if key in plugin_options and key not in core_tables
    }
    merged = _checked(path, "", {k: v for k, v in raw.items() if k not in tables}, DEFAULTS)
    base = path.parent
    config = Config(
        path=path,
        images_dir=(base / merged["images_dir"]).resolve(),
        inbox_dir=(base / merged["inbox_dir"]).resolve(),
        snapshot=(base / merged["snapshot"]).resolve(),
        database_url=_database_url(path, merged["database"]),
        pipeline=merged["pipeline"],
        k=merged["query"]["k"],
        settle_seconds=merged["daemon"]["settle_seconds"],
        batch_size=merged["daemon"]["batch_size"],
        polling=merged["daemon"]["polling"],
        rescan_seconds=merged["daemon"]["rescan_seconds"],
        max_removal_fraction=merged["daemon"]["max_removal_fraction"],
        lease_seconds=merged["daemon"]["lease_seconds"],
        models=_model_source(path, merged["models"]),
        tables=tables,
    )
    _check_values(config)
    return config


def _checked(path: Path, table: str, given: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``; an unknown key or a wrong type is an error."""
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: [{table}] must be a table")
    merged = dict(defaults)
    for key, value in given.items():
        name = f"{table}.{key}" if table else key
        if key not in defaults:
            raise ConfigError(f"{path}: unknown key {name!r}")
        default = defaults[key]
        if isinstance(default, dict):
            if table:  # plugin tables and core tables are flat
                raise ConfigError(f"{path}: unknown key {name!r}")
            merged[key] = _checked(path, key, value, default)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            merged[key] = float(value)
        elif type(value) is not type(default):
            raise ConfigError(f"{path}: {name} must be a {type(default).__name__}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: {name} must be a finite number, not {value}")
        else:
            merged[key] = value
    return merged


def _model_source(path: Path, table: dict[str, Any]) -> ModelSource:
    mirror = table["mirror"]
    if mirror and not is_url(mirror):
        raise ConfigError(f"{path}: models.mirror must be an http://, https:// or file:// URL")
    if table["timeout_seconds"] <= 0:
        raise ConfigError(f"{path}: models.timeout_seconds must be positive")
    folder = Path(table["dir"]).expanduser() if table["dir"] else None
    return ModelSource(mirror=mirror, fetch=table["fetch"],
                       dir=path.parent / folder if folder else None,
                       timeout_seconds=table["timeout_seconds"])


def _database_url(path: Path, url: str) -> str:
    """A SQLAlchemy URL whose relative SQLite path is made relative to the config file."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{path}: database {url!r} is not a SQLAlchemy URL") from None
    file = sqlite_file(url)
    if file:
        parsed = parsed.set(database=str((path.parent / file).resolve()))
    return parsed.render_as_string(hide_password=False)


def _check_values(config: Config) -> None:
    if not 1 <= config.k <= MAX_K:
        raise ConfigError(f"{config.path}: query.k must be from 1 to {MAX_K}")
    if config.batch_size < 1:
        raise ConfigError(f"{config.path}: daemon.batch_size must be at least 1")
    if config.rescan_seconds <= 0:
        raise ConfigError(f"{config.path}: daemon.rescan_seconds must be positive")
    if config.lease_seconds <= 0:
        raise ConfigError(f"{config.path}: daemon.lease_seconds must be positive")
    if config.settle_seconds < 0:
        raise ConfigError(f"{config.path}: daemon.settle_seconds must not be negative")
    if not 0 <= config.max_removal_fraction <= 1:
        raise ConfigError(f"{config.path}: daemon.max_removal_fraction must be from 0 to 1")
    images, inbox = config.images_dir, config.inbox_dir
    if images == inbox or images in inbox.parents or inbox in images.parents:
        raise ConfigError(f"{config.path}: images_dir and inbox_dir must not contain each other")
