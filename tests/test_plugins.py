"""Third-party plugins: docs/plugins.md's example, installed through the entry-point group."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lookalike.base.errors import ConfigError
from lookalike.pipeline.plugins import collect_steps, plugin_manager

PLUGINS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
LOOKALIKE = str(Path(sys.executable).parent / "lookalike")


def readme_block(first_line: str) -> str:
    """The fenced code block of docs/plugins.md that starts with ``first_line``."""
    for block in re.findall(r"```\w*\n(.*?)```", PLUGINS_PAGE.read_text(), re.DOTALL):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"docs/plugins.md has no code block starting with {first_line!r}")


def install_readme_plugin(site: Path) -> str:
    """Install docs/plugins.md's plugin as pip would: the module, a dist-info with entry points."""
    module = readme_block("# lookalike_colour_histogram.py")
    project = tomllib.loads(readme_block("# pyproject.toml of the plugin"))["project"]
    (entry_name, module_name), = project["entry-points"]["lookalike"].items()
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module_name}.py").write_text(module)
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[lookalike]\n{entry_name} = {module_name}\n")
    return entry_name


def test_readme_embedder_plugin_works_with_another_dimension(workspace, catalogue, tmp_path):
    site = tmp_path / "site"
    entry_name = install_readme_plugin(site)
    env = {**os.environ, "PYTHONPATH": str(site), "LOOKALIKE_LOAD_PLUGINS": entry_name}
    config = tomllib.loads(readme_block("[pipeline]\nembedder"))
    workspace.write_config(pipeline={"remover": "none", **config["pipeline"]},
                           **{"colour-histogram": config["colour-histogram"]})
    workspace.add_catalogue(catalogue, 4)

    def lookalike(*args):
        return subprocess.run([LOOKALIKE, *args, "--config", str(workspace.config)],
                              capture_output=True, text=True, env=env, timeout=120)

    listed = json.loads(subprocess.run([LOOKALIKE, "plugins", "--json"], capture_output=True,
                                       text=True, env=env, timeout=120).stdout)
    assert {"kind": "embedder", "name": "colour-histogram", "source":
            "lookalike-colour-histogram 0.1.0", "options": {"bins": 16}} in listed
    network = {"model": "u2net", "model_path": "", "model_path_sha256": "", "int8": False}
    for remover in ("auto", "rembg"):
        assert {"kind": "remover", "name": remover, "source": "lookalike (built in)",
                "options": network} in listed

    indexed = lookalike("index")
    assert indexed.returncode == 0, indexed.stderr
    assert "4 embedded" in indexed.stdout
    result = lookalike("query", str(catalogue / "item02.jpg"), "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == "pillow@2+none+white@2+colour-histogram-8"
    assert answer["neighbours"][0] == {"rank": 1, "path": "item02.jpg", "similarity": 1.0}
    status = json.loads(lookalike("status", "--json").stdout)
    assert status["models"] == {"pillow@2+none+white@2+colour-histogram-8": 4}

    from lookalike.store.snapshot import read_snapshot

    assert read_snapshot(workspace.root / "feature_vectors.pkl")["vectors"].shape == (4, 24)


def test_plugins_installed_on_the_machine_are_not_loaded_under_test():
    steps = collect_steps(plugin_manager())
    assert set(steps["embedder"]) == {"resnet18", "clip"}
    assert set(steps["remover"]) == {"auto", "rembg", "none"}


def test_two_steps_with_one_name_are_refused():
    from lookalike.pipeline.hookspecs import hookimpl

    class Clash:
        @hookimpl
        def register_removers(self, register):
            register("resnet18", lambda settings: None)

    pm = plugin_manager()
    pm.register(Clash())
    with pytest.raises(ConfigError, match="two plugins register a step named 'resnet18'"):
        collect_steps(pm)
