"""What the declared settings make: `lookalike init`'s commented config.toml and the settings
reference of docs/configuration.md. The repository's own config.toml is the template."""

from __future__ import annotations

import json
from collections.abc import Iterator

from lookalike.api.config import TABLES
from lookalike.base.settings import declarations, toml_default
from lookalike.pipeline.plugins import StepPlugin

HEADER = """\
# lookalike configuration, as `lookalike init` writes it. Paths are relative to this file.
# Every setting: docs/configuration.md. A table named after a step configures that step.
"""
# The plugin tables the template shows: the built-in steps of the default pipeline and their
# alternatives, after [pipeline]. Other plugins' tables are added by hand.
TEMPLATE_PLUGINS = ("pillow", "auto", "rembg", "resnet18", "clip", "hnsw")


def toml_value(value) -> str:
    """``value`` written as TOML (json's strings, numbers and booleans are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def rows(steps: dict[str, dict[str, StepPlugin]]) -> Iterator[tuple[str, str, object, str]]:
    """(table, key, default, help) of every setting the template shows, in its order."""
    plugins = {name: plugin for named in steps.values() for name, plugin in named.items()}
    for table, settings in TABLES.items():
        for declaration in declarations(settings):
            yield table, declaration.name, toml_default(declaration), declaration.help
        if table == "pipeline":
            for name in TEMPLATE_PLUGINS:
                plugin = plugins[name]
                for key, default in plugin.options.items():
                    yield name, key, default, plugin.help.get(key, "")


def config_template(steps: dict[str, dict[str, StepPlugin]]) -> str:
    """The commented config.toml `lookalike init` writes: every setting at its default."""
    lines, table_now = [HEADER], ""
    for table, key, default, help in rows(steps):
        if table != table_now:
            lines += ["", f"[{table}]"]
            table_now = table
        lines += [f"# {help}", f"{key} = {toml_value(default)}"]
    return "\n".join(lines) + "\n"


def settings_reference(steps: dict[str, dict[str, StepPlugin]]) -> str:
    """The settings as Markdown tables, one per config table (docs/configuration.md)."""
    out, table_now = [], None
    for table, key, default, help in rows(steps):
        if table != table_now:
            title = "Top level" if table == "" else f"`[{table}]`"
            out += ["", f"### {title}", "", "| key | default | meaning |", "|---|---|---|"]
            table_now = table
        meaning = help.replace('|', '/').replace('<', '&lt;')
        out.append(f"| `{key}` | `{toml_value(default)}` | {meaning} |")
    return "\n".join(out).lstrip() + "\n"
