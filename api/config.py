"""config.toml: read, checked against the declared settings (unknown keys are errors), paths
resolved relative to the file. Each table becomes its settings dataclass, passed on as is."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lookalike.base.errors import ConfigError, LookalikeError
from lookalike.base.settings import converted, declarations, toml_default
from lookalike.daemon.settings import Catalogue, DaemonSettings, HttpSettings
from lookalike.models.files import ModelSource
from lookalike.models.onnx import OnnxRuntime
from lookalike.pipeline.plugins import StepPlugin
from lookalike.pipeline.settings import PipelineSteps
from lookalike.search.settings import QuerySettings
from lookalike.store.urls import sqlite_file, with_sqlite_file

CONFIG_ENV = "LOOKALIKE_CONFIG"

# The tables of lookalike's own settings, in the order `lookalike init` writes them ("" is
# the top level). Every other table belongs to the step plugin of its name.
TABLES: dict[str, type] = {
    "": Catalogue,
    "pipeline": PipelineSteps,
    "query": QuerySettings,
    "models": ModelSource,
    "onnxruntime": OnnxRuntime,
    "daemon": DaemonSettings,
    "http": HttpSettings,
}


@dataclass(frozen=True)
class Config:
    path: Path
    catalogue: Catalogue
    pipeline: PipelineSteps
    query: QuerySettings
    models: ModelSource
    onnxruntime: OnnxRuntime
    daemon: DaemonSettings
    http: HttpSettings
    tables: dict[str, dict[str, Any]]  # each step plugin's table, its defaults filled in

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
    """Read and check ``path``; plugin tables are checked against their plugin's options."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    plugin_options = {name: p.options for named in steps.values() for name, p in named.items()}
    top_level = {key: value for key, value in raw.items() if not isinstance(value, dict)}
    for key, value in raw.items():
        if isinstance(value, dict) and key not in TABLES and key not in plugin_options:
            raise ConfigError(f"{path}: unknown key {key!r}")
    loaded = {name: _table(path, name, top_level if name == "" else raw.get(name, {}), table)
              for name, table in TABLES.items()}
    catalogue = replace(loaded[""], database=_database_url(path, loaded[""].database))
    images, inbox = catalogue.images_dir, catalogue.inbox_dir
    if images == inbox or images in inbox.parents or inbox in images.parents:
        raise ConfigError(f"{path}: images_dir and inbox_dir must not contain each other")
    tables = {key: _plugin_table(path, key, value, plugin_options[key])
              for key, value in raw.items() if key in plugin_options and key not in TABLES}
    return Config(path, catalogue, loaded["pipeline"], loaded["query"], loaded["models"],
                  loaded["onnxruntime"], loaded["daemon"], loaded["http"], tables)


def _table(path: Path, name: str, given: Any, table: type) -> Any:
    """The settings dataclass ``table`` from the TOML table ``given``."""
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    known = {declaration.name: declaration for declaration in declarations(table)}
    values = {}
    for key, value in given.items():
        qualified = f"{name}.{key}" if name else key
        if key not in known:
            raise ConfigError(f"{path}: unknown key {qualified!r}")
        try:
            values[key] = converted(known[key], value, path.parent)
        except ValueError as exc:
            raise ConfigError(f"{path}: {qualified} {exc}") from None
    defaults = {key: converted(d, toml_default(d), path.parent)
                for key, d in known.items() if key not in values}
    return table(**defaults, **values)


def _plugin_table(path: Path, name: str, given: Any, options: dict[str, Any]) -> dict[str, Any]:
    """A plugin's table: its options' defaults updated with ``given``, each of the default's
    type (a plugin declares defaults only)."""
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    merged = dict(options)
    for key, value in given.items():
        if key not in options:
            raise ConfigError(f"{path}: unknown key {f'{name}.{key}'!r}")
        default = options[key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise ConfigError(f"{path}: {name}.{key} must be a {type(default).__name__}")
        merged[key] = value
    return merged


def _database_url(path: Path, url: str) -> str:
    """A SQLAlchemy URL whose relative SQLite path is made relative to the config file."""
    try:
        file = sqlite_file(url)
    except LookalikeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return with_sqlite_file(url, str((path.parent / file).resolve())) if file else url
