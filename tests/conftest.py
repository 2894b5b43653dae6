"""Fixtures: real small models written once per session, and a workspace per test."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from builders import product_photo, write_mask_onnx, write_resnet18_state_dict
from lookalike.cli.template import toml_value

CATALOGUE_SIZE = 12
# The most the suite's folders hold at once (measured: 2.1 GB, most of it the CLIP test weights
# and their ONNX exports), with room to spare.
DISK_NEEDED = 3_000_000_000


def pytest_sessionstart(session) -> None:
    """Stop at once, in one line, on a disk too full for the suite (rather than every test
    failing in its own way half-way through)."""
    if hasattr(session.config, "workerinput"):
        return  # the controller checked
    folder = tempfile.gettempdir()  # where pytest's folders for the tests lie
    free = shutil.disk_usage(folder).free
    if free < DISK_NEEDED:
        pytest.exit(f"only {free / 1e9:.1f} GB free under {folder}; the tests need "
                    f"{DISK_NEEDED / 1e9:.0f} GB", returncode=1)


@pytest.fixture(scope="session", autouse=True)
def no_installed_plugins() -> Iterator[None]:
    """Never load plugins installed on this machine; subprocesses inherit this too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOKALIKE_LOAD_PLUGINS", "")
        yield


@pytest.fixture(scope="session")
def model_home(tmp_path_factory) -> Iterator[Path]:
    """Model caches with only the files the tests write: rembg's home, torch's home and the
    cache of exported ONNX models (set for the session, restored after it)."""
    home = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REMBG_HOME", str(home / "rembg"))
        patch.setenv("TORCH_HOME", str(home / "torch"))
        patch.setenv("XDG_CACHE_HOME", str(home / "cache"))
        patch.delenv("U2NET_HOME", raising=False)
        write_resnet18_state_dict(home / "resnet18-test.pth")
        write_mask_onnx(home / "rembg" / "custom" / "mask.onnx")
        yield home


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory) -> Path:
    """A dozen distinct synthetic product photos, as JPEG files."""
    folder = tmp_path_factory.mktemp("catalogue")
    for seed in range(CATALOGUE_SIZE):
        product_photo(seed).save(folder / f"item{seed:02d}.jpg", quality=92)
    return folder


@pytest.fixture(scope="session")
def clip_files(tmp_path_factory) -> tuple[Path, Path]:
    """Seeded random weights of Marqo-FashionCLIP's architecture (open_clip's ViT-B-16), at
    its real cost: for the tests of the vectors themselves."""
    return clip_weights(tmp_path_factory, "ViT-B-16")


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory) -> tuple[Path, Path]:
    """Seeded random weights of open_clip's ViT-S-32 (a tenth of ViT-B-16's cost): for the
    tests that run commands, the service and the UI with a CLIP embedder."""
    return clip_weights(tmp_path_factory, "ViT-S-32")


def clip_weights(tmp_path_factory, architecture: str) -> tuple[Path, Path]:
    """A safetensors file of ``architecture`` with seeded random weights, and a cache holding
    their ONNX exports: made once per session, by the first worker that needs them (under a
    lock; the others wait and share them)."""
    import fcntl
    import os

    import open_clip
    import torch
    from safetensors.torch import save_file

    from lookalike.pipeline.builtins import CLIP_OPTIONS
    from lookalike.pipeline.builtins.clip_embedder import ClipEmbedder
    from lookalike.pipeline.steps import StepSettings

    session = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        session = session.parent  # the workers' folders lie in the session's
    folder = session / f"clip-{architecture}"
    folder.mkdir(exist_ok=True)
    weights, cache = folder / "clip-test.safetensors", folder / "cache"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not weights.exists():
            torch.manual_seed(0)
            model = open_clip.create_model(architecture, pretrained=None)
            save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
                      folder / "clip-test.partial")
            (folder / "clip-test.partial").rename(weights)
            embedder = ClipEmbedder(StepSettings(
                {**CLIP_OPTIONS, "model": architecture, "weights": str(weights),
                 "cache_dir": str(cache)}, folder))
            embedder.embed_text(["exported once"])  # both towers
    return weights, cache


def clip_table(clip_files, **options) -> dict:
    """The [clip] table of a config that runs the test weights (ViT-B-16's, as Marqo's)."""
    weights, cache = clip_files
    return {"weights": str(weights), "cache_dir": str(cache), **options}


def tiny_clip_table(tiny_clip_files) -> dict:
    """The [clip] table of a config that runs the tiny test weights."""
    return clip_table(tiny_clip_files, model="ViT-S-32")


@dataclass
class Workspace:
    root: Path
    model_home: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def write_config(self, **overrides) -> None:
        """config.toml with the test models; ``overrides`` maps a table to {key: value},
        or a top-level key to its value."""
        tables = {
            "": {"images_dir": "images", "inbox_dir": "inbox"},
            "auto": {"model_path": str(self.model_home / "rembg" / "custom" / "mask.onnx")},
            "rembg": {"model_path": str(self.model_home / "rembg" / "custom" / "mask.onnx")},
            "resnet18": {"weights": str(self.model_home / "resnet18-test.pth")},
            "daemon": {"settle_seconds": 0.5},
            "models": {"fetch": False},  # a test never reaches for the internet
        }
        for name, value in overrides.items():
            if isinstance(value, dict):
                tables.setdefault(name, {}).update(value)
            else:
                tables[""][name] = value
        lines = []
        for table, values in tables.items():
            if table:
                lines.append(f"[{table}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def add_catalogue(self, catalogue: Path, count: int = CATALOGUE_SIZE) -> None:
        for path in sorted(catalogue.iterdir())[:count]:
            shutil.copy(path, self.images / path.name)


@pytest.fixture
def workspace(tmp_path, model_home) -> Workspace:
    ws = Workspace(tmp_path, model_home)
    ws.images.mkdir()
    ws.inbox.mkdir()
    ws.write_config()
    return ws


@pytest.fixture
def run_cli(workspace):
    """Invoke ``lookalike`` in-process with the workspace's config."""
    from lookalike.cli.main import cli

    def run(*args: str):
        return CliRunner().invoke(cli, [*args[:1], "--config", str(workspace.config), *args[1:]])

    return run


@pytest.fixture(autouse=True)
def no_thread_leaks():
    """Every test stops the threads it starts (observers, workers)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads leaked: {leaked}")


@pytest.fixture(scope="module")
def server():
    """A real PostgreSQL server (tests/postgres.py), one per test module that asks."""
    from postgres import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def database(server) -> str:
    """A new, empty database on the module's server: its URL."""
    return server.new_database()


@pytest.fixture
def service_factory(workspace):
    """Start ``lookalike run`` on the workspace (or on another: ``on=``); every service
    started is gone after the test."""
    from running import RunningService

    started = []

    def start(on: Workspace | None = None, **kwargs) -> RunningService:
        started.append(RunningService(on or workspace, **kwargs))
        return started[-1]

    yield start
    for service in started:
        if not service.log_file.closed:
            service.kill()
