"""config.toml: defaults, unknown keys, types, and paths relative to the file."""

from __future__ import annotations

import pytest

from lookalike.api.config import load_config
from lookalike.base.errors import ConfigError
from lookalike.models.files import ModelSource
from lookalike.pipeline.plugins import collect_steps, plugin_manager


@pytest.fixture(scope="module")
def steps():
    return collect_steps(plugin_manager())


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_repo_config_is_valid_and_matches_the_documented_defaults(steps):
    from pathlib import Path

    repo_config = Path(__file__).resolve().parent.parent / "config.toml"
    config = load_config(repo_config, steps)
    assert config.catalogue.images_dir == repo_config.parent / "images"
    assert config.catalogue.database == f"sqlite:///{repo_config.parent / 'lookalike.db'}"
    assert config.pipeline.remover == "auto" and config.pipeline.embedder == "resnet18"
    assert config.query.k == 10 and config.daemon.settle_seconds == 1.0
    assert config.tables["resnet18"] == {"weights": "imagenet", "weights_sha256": "",
                                         "backend": "onnxruntime", "cache_dir": "",
                                         "int8": False}
    assert config.tables["rembg"] == {"model": "u2net", "model_path": "", "model_path_sha256": "",
                                      "int8": False}
    assert config.tables["auto"] == config.tables["rembg"]
    assert config.tables["pillow"] == {"max_pixels": 64_000_000, "max_file_bytes": 200_000_000}
    assert config.models == ModelSource() and config.daemon.max_removal_fraction == 0.5
    assert config.pipeline.index == "exact"
    assert config.tables["hnsw"] == {"connectivity": 16, "expansion_add": 128,
                                     "expansion_search": 256}


def test_paths_are_relative_to_the_config_file(tmp_path, steps):
    config = load_config(write(tmp_path, 'images_dir = "photos"\nsnapshot = "out/v.pkl"\n'), steps)
    assert config.catalogue.images_dir == tmp_path / "photos"
    assert config.catalogue.snapshot == tmp_path / "out" / "v.pkl"
    assert config.catalogue.database == f"sqlite:///{tmp_path / 'lookalike.db'}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_dir = 'x'\n", "unknown key 'image_dir'"),
        ("[query]\nkk = 3\n", "unknown key 'query.kk'"),
        ("[rembg]\nmodel_pth = 'x'\n", "unknown key 'rembg.model_pth'"),
        ("[nosuchplugin]\nx = 1\n", "unknown key 'nosuchplugin'"),
        ("[query]\nk = 'ten'\n", "query.k must be a int"),
        ("[query]\nk = 0\n", "query.k must be from 1 to 200"),
        ("[query]\nk = 250\n", "query.k must be from 1 to 200"),
        ("[daemon]\nsettle_seconds = nan\n", "daemon.settle_seconds must be a finite number"),
        ("[daemon]\nsettle_seconds = inf\n", "daemon.settle_seconds must be a finite number"),
        ("[daemon]\nrescan_seconds = nan\n", "daemon.rescan_seconds must be a finite number"),
        ("[daemon]\nmax_removal_fraction = 1.5\n", "max_removal_fraction must be from 0 to 1"),
        ("[daemon]\nlease_seconds = 0\n", "daemon.lease_seconds must be positive"),
        ("images_dir = 'a'\ninbox_dir = 'a/inbox'\n", "must not contain each other"),
        ("database = 'nonsense'\n", "is not a SQLAlchemy URL"),
        ("k = [", "config.toml"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, steps, text, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_config(write(tmp_path, text), steps)


def test_integer_is_accepted_for_a_float_setting(tmp_path, steps):
    config = load_config(write(tmp_path, "[daemon]\nsettle_seconds = 2\n"), steps)
    assert config.daemon.settle_seconds == 2.0
