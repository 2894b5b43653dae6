"""The commands through click's CliRunner, on a real SQLite file and the real pipeline."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builders import cropped_query, product_photo
from lookalike.api.app import App
from lookalike.store.nodes import joined
from lookalike.store.schema import HELD_BACK
from lookalike.store.snapshot import read_snapshot
from lookalike.store.status import catalogue_status
from lookalike.store.store import Store
from running import query_db


def test_index_then_query_finds_the_cropped_copy_first(workspace, catalogue, run_cli, tmp_path):
    workspace.add_catalogue(catalogue)
    result = run_cli("index")
    assert result.exit_code == 0, result.output
    assert "12 embedded" in result.output and "index holds 12 images" in result.output

    query = tmp_path / "query.jpg"
    cropped_query(product_photo(7)).save(query)
    result = run_cli("query", str(query), "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[2].split() == ["1", lines[2].split()[1], "item07.jpg"]
    assert len(lines) == 2 + 3

    answer = json.loads(run_cli("query", str(query), "--json").output)
    assert answer["query"] == "query.jpg" and answer["k"] == 10 and answer["index_size"] == 12
    assert answer["neighbours"][0] == {
        "rank": 1, "path": "item07.jpg", "similarity": answer["neighbours"][0]["similarity"]
    }
    assert [n["rank"] for n in answer["neighbours"]] == list(range(1, 11))
    assert re.fullmatch(
        r"pillow@2\+auto:plain@2\|rembg-u2net_custom@[0-9a-f]{12}\+white@2"
        r"\+resnet18@[0-9a-f]{12}",
        answer["model"])
    assert json.loads(run_cli("status", "--json").output)["models"] == {answer["model"]: 12}


def test_index_writes_the_snapshot_in_the_documented_format(workspace, catalogue, run_cli):
    workspace.add_catalogue(catalogue, 4)
    assert run_cli("index").exit_code == 0
    snapshot = read_snapshot(workspace.root / "feature_vectors.pkl")
    assert snapshot["paths"] == [f"item{i:02d}.jpg" for i in range(4)]
    assert snapshot["vectors"].shape == (4, 512) and snapshot["vectors"].dtype == "float32"
    with open(workspace.root / "feature_vectors.pkl", "rb") as f:
        assert pickle.load(f)["model"] == snapshot["model"]  # plain pickle readers work too


def test_index_again_skips_unchanged_files_and_forgets_deleted_ones(workspace, catalogue, run_cli):
    workspace.add_catalogue(catalogue, 5)
    assert run_cli("index").exit_code == 0
    (workspace.images / "item00.jpg").unlink()
    result = run_cli("index")
    assert "0 embedded" in result.output and "4 unchanged" in result.output
    assert "1 removed" in result.output and "index holds 4 images" in result.output


def test_same_bytes_under_two_names_are_embedded_once(workspace, catalogue, run_cli):
    workspace.add_catalogue(catalogue, 3)
    (workspace.images / "copy.jpg").write_bytes((workspace.images / "item01.jpg").read_bytes())
    result = run_cli("index")
    assert "3 embedded, 1 reused" in result.output


def test_copies_in_overlapping_batches_are_embedded_once(workspace, catalogue, run_cli):
    """The next batch is read while the one before is still being prepared: a copy of what
    that batch holds waits for its vector."""
    workspace.write_config(daemon={"batch_size": 2})
    workspace.add_catalogue(catalogue, 4)
    for name, original in (("b-copy.jpg", "item01.jpg"), ("c-copy.jpg", "item02.jpg")):
        (workspace.images / name).write_bytes((workspace.images / original).read_bytes())
    result = run_cli("index")  # batches: b-copy c-copy | item00 item01 | item02 item03
    assert "4 embedded, 2 reused, 0 unchanged, 0 failed" in result.output
    vectors = dict(query_db(workspace, "SELECT path, vector FROM images"))
    assert vectors["b-copy.jpg"] == vectors["item01.jpg"] is not None
    assert vectors["c-copy.jpg"] == vectors["item02.jpg"] is not None


def test_changing_the_pipeline_re_embeds_everything(workspace, catalogue, run_cli):
    workspace.add_catalogue(catalogue, 3)
    run_cli("index")
    workspace.write_config(pipeline={"remover": "none"})
    result = run_cli("index")
    assert "3 embedded" in result.output
    models = json.loads(run_cli("status", "--json").output)["models"]
    assert len(models) == 1
    assert next(iter(models)).startswith("pillow@2+none+white@2+resnet18@")
    assert list(models.values()) == [3]


def test_status_reports_counts_index_and_service(workspace, catalogue, run_cli):
    workspace.add_catalogue(catalogue, 3)
    (workspace.images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    run_cli("index")
    status = json.loads(run_cli("status", "--json").output)
    assert status["indexed"] == 3 and status["failed"] == 1 and status["index_size"] == 3
    assert status["last_refresh"] and status["nodes"] == []
    text = run_cli("status").output
    assert "indexed:      3" in text and "failed:       1" in text and "not running" in text


def test_status_read_with_sqlite3_alone_is_what_the_store_reports(workspace, catalogue, run_cli):
    workspace.add_catalogue(catalogue, 3)
    (workspace.images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    run_cli("index")
    app = App(str(workspace.config))
    with app.opened_store() as store, joined(store, "run", app.pipeline.model_id):
        store.set_meta(HELD_BACK, "2 of 4 catalogue images are missing")
        report = app.status()
        assert report == catalogue_status(app.config.catalogue.database, store)
    assert sum(report["removals"].values()) == 3 and report["removals_held_back"]
    assert report["indexed"] == 3 and report["failed"] == 1
    assert [(node["command"], node["live"]) for node in report["nodes"]] == [("run", True)]


def test_status_before_the_first_index_makes_no_database(workspace, run_cli):
    status = json.loads(run_cli("status", "--json").stdout)
    assert (status["indexed"], status["nodes"]) == (0, [])
    assert not (workspace.root / "lookalike.db").exists()


def test_status_of_a_database_file_it_cannot_read_is_one_line(workspace, run_cli):
    database = workspace.root / "lookalike.db"
    database.mkdir()
    result = run_cli("status")
    assert result.exit_code == 1 and result.output.splitlines() == [
        f"Error: cannot open database sqlite:///{database}: unable to open database file"]
    database.rmdir()
    database.write_bytes(b"these are my notes, not a database" * 100)
    result = run_cli("status")
    assert result.exit_code == 1 and result.output.splitlines() == [
        f"Error: cannot open database sqlite:///{database}: file is not a database"]


def test_a_file_that_is_not_an_image_is_stored_as_failed_and_not_retried(
    workspace, catalogue, run_cli
):
    (workspace.images / "notes.jpg").write_text("shopping list")
    (workspace.images / "notes-copy.jpg").write_text("shopping list")  # same bytes fail alike
    assert "0 reused, 0 unchanged, 2 failed" in run_cli("index").output
    assert "2 unchanged" in run_cli("index").output
    store = Store(f"sqlite:///{workspace.root / 'lookalike.db'}")
    try:
        assert store.failures() == [("notes-copy.jpg", "not an image Pillow can read"),
                                    ("notes.jpg", "not an image Pillow can read")]
    finally:
        store.close()


def test_user_errors_are_one_line_with_exit_1(workspace, catalogue, run_cli, tmp_path):
    result = run_cli("query", str(tmp_path / "missing.jpg"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'missing.jpg'}: cannot read: No such file or directory"
    ]

    query = tmp_path / "q.jpg"
    product_photo(1).save(query)
    result = run_cli("query", str(query))
    assert result.exit_code == 1 and "index holds no images" in result.output

    workspace.add_catalogue(catalogue, 2)
    run_cli("index")
    text = tmp_path / "q.txt"
    text.write_text("hello")
    result = run_cli("query", str(text))
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "not an image" in result.output


def test_bad_config_is_exit_1_and_usage_errors_exit_2(workspace, run_cli):
    workspace.config.write_text("surprise = 1\n")
    result = run_cli("status")
    assert result.exit_code == 1 and "unknown key 'surprise'" in result.output
    assert run_cli("query").exit_code == 2
    assert run_cli("query", "x.jpg", "-k", "0").exit_code == 2

    workspace.write_config(pipeline={"index": "faiss"}, resnet18={"backend": "tf"})
    result = run_cli("run")
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: [pipeline] index 'faiss' is not installed; one of: exact, hnsw"]
    workspace.write_config(resnet18={"backend": "tf"})
    result = run_cli("models")
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: resnet18.backend must be one of onnxruntime, torch"]


def test_models_lists_files_with_digests_and_fails_when_one_is_missing(
    workspace, run_cli, model_home
):
    result = run_cli("models", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["step"] for row in rows] == ["auto", "resnet18"]
    assert all(row["present"] and len(row["sha256"]) == 64 for row in rows)
    assert all(row["runs_on"] == ["CPUExecutionProvider"] for row in rows)  # "auto", no GPU
    workspace.write_config(resnet18={"backend": "torch"})
    listed = json.loads(run_cli("models", "--json").output)
    runs_on = {row["step"]: row["runs_on"] for row in listed}
    assert runs_on == {"auto": ["CPUExecutionProvider"], "resnet18": None}
    workspace.write_config()

    workspace.write_config(resnet18={"weights": "imagenet"})
    result = run_cli("models")
    assert result.exit_code == 1
    assert "MISSING" in result.output and "resnet18-f37072fd.pth" in result.output


def test_init_starts_anywhere_and_looking_makes_nothing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from lookalike.cli.main import cli

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["run"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: config file config.toml not found: run `lookalike init` to make one, or use "
        "--config or LOOKALIKE_CONFIG"]
    assert runner.invoke(cli, ["init", "shop"]).exit_code == 0
    shop = tmp_path / "shop"
    assert sorted(p.name for p in shop.iterdir()) == ["config.toml", "images", "inbox"]
    repo_config = Path(__file__).resolve().parent.parent / "config.toml"
    assert (shop / "config.toml").read_bytes() == repo_config.read_bytes()
    (shop / "config.toml").write_text("# mine\n")
    result = runner.invoke(cli, ["init", "shop"])
    assert result.exit_code == 1 and "exists already; nothing was changed" in result.output
    assert (shop / "config.toml").read_text() == "# mine\n"

    (shop / "config.toml").write_bytes(repo_config.read_bytes())
    for args in (["status"], ["status", "--json"], ["--help"], ["status", "--help"]):
        assert runner.invoke(cli, [*args[:1], "--config", str(shop / "config.toml"),
                                   *args[1:]] if args[0] != "--help" else args).exit_code == 0
    assert sorted(p.name for p in shop.iterdir()) == ["config.toml", "images", "inbox"]


@pytest.mark.slow
def test_the_wheel_carries_every_module(tmp_path):
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(root)], check=True,
                   capture_output=True)
    [wheel] = tmp_path.glob("lookalike-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    folders = [path.parent for path in root.glob("*/__init__.py") if path.parent.name != "tests"]
    assert {folder.name for folder in folders} >= {"base", "cli", "daemon", "models", "pipeline",
                                                   "search", "store"}
    for folder in folders:
        for module in folder.rglob("*.py"):
            assert f"lookalike/{module.relative_to(root).as_posix()}" in names
