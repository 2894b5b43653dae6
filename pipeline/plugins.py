"""The plugin manager: built-in steps and third-party ones from the ``lookalike`` entry points."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from lookalike.base.errors import ConfigError
from lookalike.models.files import ModelSource
from lookalike.models.onnx import OnnxRuntime
from lookalike.pipeline import hookspecs
from lookalike.pipeline.steps import STEP_KINDS, StepSettings

ENTRY_POINT_GROUP = "lookalike"
# Comma-separated entry-point names to load; unset loads all, empty loads none (tests use that).
LOAD_PLUGINS_ENV = "LOOKALIKE_LOAD_PLUGINS"

# The hook through which plugins offer each kind of step.
HOOKS = {
    "decoder": "register_decoders",
    "remover": "register_removers",
    "padder": "register_padders",
    "embedder": "register_embedders",
    "index": "register_indexes",
}

# The module that declares the built-in steps (pipeline/builtins/__init__.py).
BUILTINS_MODULE = "lookalike.pipeline.builtins"


@dataclass(frozen=True)
class StepPlugin:
    """One step a plugin offers, under the name config.toml chooses it by."""

    kind: str
    name: str
    factory: Callable[[StepSettings], Any]
    options: dict[str, Any]
    source: str  # "lookalike (built in)", or the distribution that installed the plugin
    help: dict[str, str]  # one line for each option, for the docs and `lookalike init`

    def build(self, table: dict[str, Any], base_dir, models: ModelSource,
              onnxruntime: OnnxRuntime) -> Any:
        return self.factory(StepSettings({**self.options, **table}, base_dir, models,
                                         onnxruntime))


def plugin_manager() -> pluggy.PluginManager:
    """A manager with the built-ins registered and the allowed entry points loaded."""
    pm = pluggy.PluginManager("lookalike")
    pm.add_hookspecs(hookspecs)
    pm.register(importlib.import_module(BUILTINS_MODULE), BUILTINS_MODULE)
    allowed = os.environ.get(LOAD_PLUGINS_ENV)
    if allowed is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        for name in filter(None, (n.strip() for n in allowed.split(","))):
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name)
    return pm


def installed(steps: dict[str, dict[str, StepPlugin]], kind: str, name: str) -> StepPlugin:
    """The step plugin ``name`` of ``kind``, or ConfigError listing the installed ones."""
    if name not in steps[kind]:
        names = ", ".join(sorted(steps[kind]))
        raise ConfigError(f"[pipeline] {kind} {name!r} is not installed; one of: {names}")
    return steps[kind][name]


def collect_steps(pm: pluggy.PluginManager) -> dict[str, dict[str, StepPlugin]]:
    """Every registered step, by kind and then by name, with the plugin it came from."""
    steps: dict[str, dict[str, StepPlugin]] = {kind: {} for kind in STEP_KINDS}
    distributions = {plugin: f"{dist.project_name} {dist.version}"
                     for plugin, dist in pm.list_plugin_distinfo()}
    for kind in STEP_KINDS:
        for hook in getattr(pm.hook, HOOKS[kind]).get_hookimpls():
            source = distributions.get(hook.plugin, "lookalike (built in)")

            def register(name, factory, options=None, help=None, kind=kind, source=source):
                # Names are unique across kinds: a step reads the config table named after it.
                if any(name in named for named in steps.values()):
                    raise ConfigError(f"two plugins register a step named {name!r}")
                steps[kind][name] = StepPlugin(kind, name, factory, dict(options or {}), source,
                                               dict(help or {}))

            hook.function(register=register)
    return steps
