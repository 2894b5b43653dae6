"""Which heavy libraries each command imports: a command that needs no model must not pay for
loading one (on two cores torch takes seconds to import, scipy a tenth of one). Each command
runs in a fresh interpreter, which then lists what it imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from builders import product_photo
from lookalike.store.store import Store

HEAVY = ("torch", "torchvision", "onnxruntime", "rembg", "numba", "streamlit", "scipy",
         "sklearn", "usearch", "faiss", "fastapi", "uvicorn")
# What every command but `status` and `--help` imports.
BASICS = ("sqlalchemy", "numpy", "PIL")
PROBE = f"""
import sys
from lookalike.cli.main import cli
try:
    cli(sys.argv[1:])
except SystemExit:
    pass
print("imported:", *[name for name in {HEAVY!r} if name in sys.modules])
"""


def heavy_imports(workspace, *args: str, watched: tuple[str, ...] = HEAVY) -> set[str]:
    probe = PROBE.replace(repr(HEAVY), repr(watched))
    done = subprocess.run([sys.executable, "-c", probe, *args, "--config", str(workspace.config)],
                          capture_output=True, text=True, timeout=120)
    line = done.stdout.splitlines()[-1]
    assert line.startswith("imported:"), done.stdout + done.stderr
    return set(line.split()[1:])


@pytest.mark.parametrize("command", [("status",), ("status", "--json"), ("plugins",),
                                     ("query", "--similar", "item00.jpg")])
def test_commands_that_run_no_model_import_no_heavy_library(workspace, command):
    assert heavy_imports(workspace, *command) == set()


def test_status_reads_a_current_sqlite_store_with_python_alone(workspace, catalogue):
    """Not even SQLAlchemy, numpy or Pillow: `status` answers in a tenth of a second."""
    Store(f"sqlite:///{workspace.root / 'lookalike.db'}").close()  # made, of this schema
    assert heavy_imports(workspace, "status", watched=HEAVY + BASICS) == set()


def test_models_asks_onnx_runtime_what_runs_the_models_and_loads_none(workspace):
    assert heavy_imports(workspace, "models") == {"onnxruntime"}


def test_commands_that_embed_import_what_embedding_takes(workspace, catalogue, tmp_path):
    workspace.add_catalogue(catalogue, 1)
    assert {"onnxruntime", "scipy"} <= heavy_imports(workspace, "index")
    photo = tmp_path / "photo.jpg"
    product_photo(1).save(photo)
    assert {"onnxruntime", "scipy"} <= heavy_imports(workspace, "query", str(photo))
