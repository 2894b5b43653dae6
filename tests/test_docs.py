"""The docs say what the code does, as datasette's docs test does: every setting, command,
option and plugin hook is documented, every guarantee names a test that exists, the pages
made from the code are current, and the layers import one way only."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from lookalike.api.config import TABLES
from lookalike.base.settings import declarations
from lookalike.cli.main import cli
from lookalike.pipeline import hookspecs
from lookalike.pipeline.plugins import collect_steps, plugin_manager

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SAID_ONCE = {"--config", "--offline", "--help"}
# Each package may import only those before it (docs/architecture.md).
LAYERS = ["base", "models", "pipeline", "store", "search", "daemon", "api", "web", "cli"]


def page(name: str) -> str:
    return (DOCS / name).read_text()


def test_the_readme_is_short_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert not [line for line in readme.splitlines() if len(line) > 200]
    for doc in DOCS.glob("*.md"):
        assert f"docs/{doc.name}" in readme, f"README does not link docs/{doc.name}"


def test_every_setting_is_documented():
    reference = page("configuration.md")
    for table, settings in TABLES.items():
        for declaration in declarations(settings):
            assert declaration.help, f"{table}.{declaration.name} has no help"
            heading = "### Top level" if table == "" else f"### `[{table}]`"
            section = reference.split(heading, 1)[1].split("###", 1)[0]
            assert f"| `{declaration.name}` |" in section, f"{table}.{declaration.name}"


def test_every_option_of_a_built_in_step_has_help_and_is_documented():
    reference = page("configuration.md")
    for named in collect_steps(plugin_manager()).values():
        for name, plugin in named.items():
            for key in plugin.options:
                assert plugin.help.get(key), f"[{name}] {key} has no help"
                section = reference.split(f"### `[{name}]`", 1)[1].split("###", 1)[0]
                assert f"| `{key}` |" in section, f"[{name}] {key}"


def test_every_command_and_option_is_in_the_command_table():
    table = dict(re.findall(r"^\| `lookalike (\w+)([^`]*)` \|", page("cli.md"), re.MULTILINE))
    assert set(table) == set(cli.commands)
    for name, command in cli.commands.items():
        options = {opt for param in command.params if isinstance(param, click.Option)
                   for opt in param.opts if opt.startswith("--")}
        for option in options - SAID_ONCE:
            assert option in table[name], f"docs/cli.md: lookalike {name} lacks {option}"


def test_every_plugin_hook_is_documented():
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert len(hooks) == 5
    for hook in hooks:
        assert f"`{hook}`" in page("plugins.md"), hook


def test_every_guarantee_names_tests_that_exist():
    tests = Path(__file__).resolve().parent
    rows = [line for line in page("guarantees.md").splitlines()
            if line.startswith("| ") and not line.startswith(("| promise", "|---"))]
    assert len(rows) > 20
    for row in rows:
        modules = re.findall(r"`(test_\w+\.py)(?:::\w+)?`", row)
        assert modules or "same test" in row, f"a guarantee without a test: {row[:80]}"
        for module in modules:
            assert (tests / module).is_file(), f"docs/guarantees.md names {module}"
        for module, test in re.findall(r"`(test_\w+\.py)::(test_\w+)`", row):
            assert re.search(rf"^def {test}\(", (tests / module).read_text(), re.MULTILINE), (
                f"docs/guarantees.md names {module}::{test}, which does not exist")


@pytest.mark.parametrize("name", ["cli.md", "configuration.md"])
def test_the_pages_made_from_the_code_are_current(name):
    result = subprocess.run([sys.executable, "-m", "cogapp", "--check", str(DOCS / name)],
                            capture_output=True, text=True)
    assert result.returncode == 0, (f"docs/{name} is out of date: run "
                                    f".venv/bin/cog -r docs/{name}\n{result.stdout}"
                                    f"{result.stderr}")


def test_the_repository_config_is_the_template(tmp_path):
    from lookalike.cli.template import config_template

    assert (ROOT / "config.toml").read_text() == config_template(collect_steps(plugin_manager()))


def test_the_layers_import_one_way():
    for position, package in enumerate(LAYERS):
        allowed = set(LAYERS[:position + 1])
        for module in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(module.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "lookalike" and len(parts) > 1:
                        assert parts[1] in allowed, (
                            f"{module.relative_to(ROOT)} imports {name}: {package}/ may import "
                            f"only {', '.join(sorted(allowed))}")
