"""Reliability III on one machine (SQLite, in-process commands): a catalogue root watched from
inside, limits that change, `init` over a file, a passing out-of-memory failure."""

from __future__ import annotations

import shutil
from dataclasses import replace

from click.testing import CliRunner

from builders import product_photo
from lookalike.api.app import App
from lookalike.base.files import ROOT_MARK
from lookalike.cli.main import cli
from lookalike.daemon.ingest import ingest
from lookalike.store.nodes import joined
from running import stored


def test_an_images_dir_inside_the_catalogue_root_is_refused_in_one_line(workspace, catalogue,
                                                                       run_cli):
    (workspace.images / "tops").mkdir()
    for name in ("item00.jpg", "item01.jpg"):
        shutil.copy(catalogue / name, workspace.images / "tops" / name)
    assert run_cli("index").exit_code == 0
    assert (workspace.images / ROOT_MARK).is_file()
    before = stored(workspace)
    workspace.write_config(images_dir="images/tops")  # a second node's view, nested
    result = run_cli("index")
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: images_dir {workspace.images / 'tops'} lies inside {workspace.images}, this "
        f"catalogue's root (another node watches it): set images_dir to {workspace.images}, or "
        f"delete {workspace.images / ROOT_MARK} if the catalogue has moved"]
    assert stored(workspace) == before  # before: every row undone, then redone elsewhere


def test_an_images_dir_holding_the_catalogue_root_is_refused_in_one_line(workspace, catalogue,
                                                                        run_cli):
    tops = workspace.images / "tops"
    tops.mkdir()
    shutil.copy(catalogue / "item00.jpg", tops / "item00.jpg")
    workspace.write_config(images_dir="images/tops")
    assert run_cli("index").exit_code == 0
    before = stored(workspace)
    workspace.write_config()  # images_dir = images: the root is a folder inside it
    result = run_cli("index")
    assert result.exit_code == 1 and "holds" in result.output and (
        f"set images_dir to {tops}" in result.output), result.output
    assert stored(workspace) == before


def test_a_file_refused_by_a_limit_is_retried_once_the_limit_changes(workspace, catalogue,
                                                                     run_cli):
    workspace.add_catalogue(catalogue, 2)
    workspace.write_config(pillow={"max_pixels": 1000})
    result = run_cli("index")
    assert "2 failed" in result.output, result.output
    assert {status for status, _ in stored(workspace).values()} == {"failed"}
    workspace.write_config(pillow={"max_pixels": 64_000_000})
    result = run_cli("index")
    assert "2 embedded" in result.output, result.output  # before: "2 unchanged"
    assert {status for status, _ in stored(workspace).values()} == {"indexed"}
    assert "2 unchanged" in run_cli("index").output  # and then it is current


def test_init_over_a_file_named_images_is_one_line_and_writes_nothing(tmp_path):
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "images").write_text("not a folder")
    result = CliRunner().invoke(cli, ["init", str(shop)])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {shop / 'images'} exists and is not a folder; nothing was changed"]
    assert sorted(p.name for p in shop.iterdir()) == ["images"]  # before: config.toml written


class OutOfMemoryOnce:
    """A fake remover (a real out-of-memory cannot be provoked safely): the real one, except
    that its first call raises MemoryError, as an allocation failing under load would."""

    def __init__(self, remover):
        self.remover, self.calls = remover, 0
        self.id = remover.id

    def model_files(self):
        return self.remover.model_files()

    def remove(self, image):
        self.calls += 1
        if self.calls == 1:
            raise MemoryError("cannot allocate 512 MB")
        return self.remover.remove(image)


def test_out_of_memory_is_tried_again_never_stored_as_failed(workspace, catalogue):
    workspace.add_catalogue(catalogue, 1)
    product_photo(40).save(workspace.images / "twin.jpg")
    shutil.copy(catalogue / "item00.jpg", workspace.images / "copy.jpg")
    app = App(str(workspace.config))
    pipeline = replace(app.pipeline, remover=OutOfMemoryOnce(app.pipeline.remover))
    with app.opened_store() as store, joined(store, "index", pipeline.model_id) as node:
        report = ingest(store, pipeline, workspace.images, node,
                        ["item00.jpg", "copy.jpg", "twin.jpg"], 4)
        assert report.failed == 0 and report.embedded == 2, report
    assert {status for status, _ in stored(workspace).values()} == {"indexed"}
    assert len(stored(workspace)) == 3
