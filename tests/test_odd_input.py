"""What a hostile user can throw at the commands: odd names, odd formats, huge files, a missing
or emptied images folder, links, bad database URLs. Each gets a failed record or a one-line
error, and nothing else changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from builders import odd_images, product_photo
from lookalike.base.files import disk_name, scan, stored_name
from lookalike.daemon.inbox import answer_path
from lookalike.daemon.lock import lock_path
from lookalike.store.urls import is_server, masked, sqlite_file, with_sqlite_file
from running import LOOKALIKE, stored

NOT_UTF8 = {  # the name on disk -> the name stored and answered
    os.fsdecode(b"caf\xe9.png"): "caf\\xe9.png",
    os.fsdecode(b"sub\xff/inner.png"): "sub\\xff/inner.png",
    "back\\slash.png": "back\\\\slash.png",
    "caf\\xe9.png": "caf\\\\xe9.png",  # the escape's own text stays a different name
}


def test_names_that_are_not_utf8_are_stored_losslessly(workspace, run_cli):
    for seed, name in enumerate(NOT_UTF8):
        path = workspace.images / name
        path.parent.mkdir(exist_ok=True)
        product_photo(seed).save(path, "PNG")
    result = run_cli("index")
    assert result.exit_code == 0, result.output
    assert "4 embedded" in result.output
    assert set(stored(workspace)) == set(NOT_UTF8.values())
    for on_disk, name in NOT_UTF8.items():
        assert disk_name(name) == on_disk and stored_name(on_disk) == name
    assert "4 unchanged" in run_cli("index").output  # found again under the same names

    query = workspace.root / os.fsdecode(b"qu\xe9ry.png")
    product_photo(0).save(query, "PNG")
    answer = json.loads(run_cli("query", str(query), "--json").output)
    assert answer["query"] == "qu\\xe9ry.png"
    assert answer["neighbours"][0]["path"] == "caf\\xe9.png"


ODD = odd_images()


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """The odd files in one category folder, a plain photo in another."""
    folder = tmp_path_factory.mktemp("odd")
    (folder / "odd").mkdir()
    (folder / "plain").mkdir()
    for name, data in ODD.items():
        (folder / "odd" / name).write_bytes(data)
    for seed in range(2):
        product_photo(seed).save(folder / "plain" / f"{seed}.jpg")
    return folder


def test_every_odd_format_is_indexed_or_failed_by_index_query_and_eval(odd_folder, workspace,
                                                                        run_cli):
    for name, data in ODD.items():
        (workspace.images / name).write_bytes(data)
    result = run_cli("index")
    assert result.exit_code == 0, result.output
    rows = stored(workspace)
    assert set(rows) == set(ODD)
    failed = {path for path, (status, _) in rows.items() if status == "failed"}
    assert failed == {"eps.jpg", "psd-16-bit.png"}  # no Ghostscript; Pillow reads 8-bit PSD
    for name in ODD:
        result = run_cli("query", str(workspace.images / name), "-k", "3")
        assert result.exit_code == (1 if name in failed else 0), (name, result.output)
        assert "Traceback" not in result.output and len(result.output.splitlines()) <= 5
    result = run_cli("eval", str(odd_folder), "--json", "-k", "1")
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.output)
    assert sorted(f["path"] for f in evaluation["failed"]) == sorted(f"odd/{n}" for n in failed)
    assert evaluation["images"] == len(ODD) - len(failed) + 2


def test_a_huge_file_is_refused_without_being_read(workspace, catalogue, tmp_path):
    workspace.add_catalogue(catalogue, 2)
    for name in ("huge1.jpg", "huge2.jpg", "huge3.jpg", "huge4.jpg"):
        with open(workspace.images / name, "wb") as f:  # sparse: 600 MB on no disk
            f.truncate(600_000_000)
    with open(workspace.images / "zeros.jpg", "wb") as f:  # under the limit, not an image
        f.truncate(150_000_000)
    peak = subprocess.run(
        [sys.executable, "-c", "import resource, subprocess, sys; "
         "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
         LOOKALIKE, "index", "--config", str(workspace.config)],
        capture_output=True, text=True, check=True).stdout
    assert int(peak) * 1024 < 1.2e9  # the models, not 2.4 GB of zeros
    errors = {path: error for path, (_, error) in error_rows(workspace).items()}
    assert "more than [pillow] max_file_bytes (200,000,000)" in errors["huge1.jpg"]
    assert errors["zeros.jpg"] == "not an image Pillow can read"


def error_rows(workspace) -> dict[str, tuple[str, str | None]]:
    from running import query_db

    return {path: (status, error) for path, status, error in
            query_db(workspace, "SELECT path, status, error FROM images")}


def test_a_missing_images_dir_is_an_error_and_changes_nothing(workspace, catalogue, run_cli):
    workspace.add_catalogue(catalogue, 4)
    assert run_cli("index").exit_code == 0
    os.rename(workspace.images, workspace.root / "away")
    result = run_cli("index")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: images_dir {workspace.images} does not exist (an unmounted share?); "
        "nothing was changed"]
    assert not workspace.images.exists()  # never created
    assert len(stored(workspace)) == 4


def test_a_rescan_that_would_forget_most_of_the_catalogue_holds_back(workspace, catalogue,
                                                                      run_cli):
    workspace.add_catalogue(catalogue, 6)
    assert run_cli("index").exit_code == 0
    for path in sorted(workspace.images.glob("*.jpg"))[:4]:  # 4 of 6 gone: an emptied mount
        path.unlink()
    product_photo(30).save(workspace.images / "new.jpg")
    result = run_cli("index")
    assert result.exit_code == 0
    assert "1 embedded" in result.output and "0 removed" in result.output
    assert "removals held back: 4 of 6 catalogue images are missing" in result.output
    assert len(stored(workspace)) == 7
    status = json.loads(run_cli("status", "--json").output)
    assert "--allow-mass-removal" in status["removals_held_back"]
    assert "held back:" in run_cli("status").output

    result = run_cli("index", "--allow-mass-removal")
    assert "4 removed" in result.output and "held back" not in result.output
    assert len(stored(workspace)) == 3
    assert json.loads(run_cli("status", "--json").output)["removals_held_back"] is None


def test_rows_of_paths_that_are_no_longer_candidates_are_forgotten(workspace, catalogue,
                                                                   run_cli):
    (workspace.images / "shirts").mkdir()
    workspace.add_catalogue(catalogue, 3)
    os.rename(workspace.images / "item00.jpg", workspace.images / "shirts" / "a.jpg")
    assert run_cli("index").exit_code == 0
    os.rename(workspace.images / "shirts", workspace.images / ".shirts")
    assert "1 removed" in run_cli("index").output
    assert set(stored(workspace)) == {"item01.jpg", "item02.jpg"}


def test_linked_folders_are_never_entered(workspace, catalogue, run_cli, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    product_photo(20).save(outside / "far.jpg")
    workspace.add_catalogue(catalogue, 2)
    (workspace.images / "ext").symlink_to(outside)
    (workspace.images / "loop").symlink_to(".")
    (workspace.images / "inside-link.jpg").symlink_to(workspace.images / "item00.jpg")
    assert run_cli("index").exit_code == 0
    assert set(stored(workspace)) == {"item00.jpg", "item01.jpg", "inside-link.jpg"}
    assert set(scan(workspace.images).files) == set(stored(workspace))


def test_answers_to_names_near_the_filesystems_limit_are_written(tmp_path):
    from lookalike.base.atomic import write_atomically

    legal = tmp_path / ("裙" * 78 + ".jpg")  # 238 bytes: its answer's name just fits
    assert answer_path(legal).name == legal.name + ".neighbours.json"
    write_atomically(answer_path(legal), b"{}")  # the temporary name is shorter
    longer = tmp_path / ("裙" * 82 + ".jpg")  # 250 bytes: the answer's name is cut
    answer = answer_path(longer)
    assert len(os.fsencode(answer.name)) <= 255
    assert answer.name.startswith("裙" * 76 + "~") and answer.name.endswith(".neighbours.json")
    assert answer != answer_path(tmp_path / ("裙" * 81 + "x.jpg"))  # the digest tells apart
    write_atomically(answer, b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [answer.name, answer_path(legal).name])


@pytest.mark.parametrize("url", [
    "sqlite:///shop.db", "sqlite:////srv/shop%20x.db", "sqlite://", "sqlite:///:memory:",
    "sqlite+pysqlite:///a.db?timeout=5", "postgresql://db/catalogue",
    "postgresql+psycopg://shop:p%40ss/w:rd@db.internal:5432/catalogue?sslmode=require",
    "postgresql+psycopg://shop@[::1]:5432/catalogue",
    "postgresql+psycopg:///catalogue?host=/run/postgresql"])
def test_database_urls_are_read_as_sqlalchemy_reads_them(url):
    """store/urls.py reads them without importing SQLAlchemy: the two agree."""
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    assert is_server(url) is not sqlite
    assert sqlite_file(url) == (parsed.database if sqlite and parsed.database not in
                                (None, "", ":memory:") else None)
    assert make_url(masked(url)) == (parsed if parsed.password is None
                                     else parsed.set(password="***"))
    if sqlite_file(url):
        moved = make_url(with_sqlite_file(url, "/srv/a b?#%.db"))
        assert moved == parsed.set(database="/srv/a b?#%.db")


def test_database_urls_are_masked_and_only_sqlite_files_are_locked(workspace, run_cli, tmp_path):
    url = "postgresql+psycopg://shop:s3cret@db.internal:5432/catalogue"
    assert masked(url) == "postgresql+psycopg://shop:***@db.internal:5432/catalogue"
    assert lock_path(url) is None  # a server is shared by nodes
    assert lock_path(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db.lock"

    workspace.write_config(database=url)
    result = run_cli("status")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "failed to resolve host 'db.internal'" in result.output
    assert "s3cret" not in result.output
    workspace.write_config(database="mysql+pymysql://shop:s3cret@db.internal/catalogue")
    result = run_cli("status")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "driver is not installed" in result.output and "s3cret" not in result.output


def test_a_lock_or_snapshot_that_cannot_be_written_is_one_line(workspace, run_cli):
    not_a_folder = workspace.root / "file"
    not_a_folder.write_text("")
    workspace.write_config(database=f"sqlite:///{not_a_folder}/x.db")
    result = run_cli("index")
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: cannot create lock file {not_a_folder}/x.db.lock: Not a directory"]
    workspace.write_config(snapshot="missing/feature_vectors.pkl")
    result = run_cli("index")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "the folder of snapshot" in result.output and "does not exist" in result.output


def test_whatever_a_step_raises_over_a_query_becomes_its_answers_error(workspace, catalogue,
                                                                       run_cli):
    from lookalike.api.app import App
    from lookalike.search.query import answer_queries
    from lookalike.store.store import Store

    workspace.add_catalogue(catalogue, 2)
    run_cli("index")
    app = App(str(workspace.config))

    def remove_that_breaks(image):  # injected: a plugin's bug
        raise KeyError("no mask\nfor this one")

    app.pipeline.remover.remove = remove_that_breaks
    store = Store(app.config.catalogue.database)
    try:
        from lookalike.search.query import load_index

        index = load_index(store, app.pipeline.model_id, app.vector_index())
    finally:
        store.close()
    data = (catalogue / "item00.jpg").read_bytes()
    [answer] = answer_queries(app.pipeline, index, [("q.jpg", data)], 3)
    assert answer["error"] == "KeyError: 'no mask\\nfor this one'" and answer["neighbours"] == []
    assert run_cli("query", str(catalogue / "item00.jpg"), "-k", "250").exit_code == 2
