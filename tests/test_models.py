"""Model files that arrive by themselves: real downloads over loopback from a small HTTP server
that serves the tests' own model files, misbehaving on request (no mocks of the network)."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from running import LOOKALIKE, stored


class ModelServer:
    """Serves a folder on 127.0.0.1: ``/files/<name>`` as it is, ``/truncated/<name>`` cut off
    halfway (the connection closes), ``/silent/<name>`` never answers, ``/trickle/<name>``
    sends a byte every 50 ms; all else is a 404. A query string is ignored."""

    def __init__(self, folder: Path):
        self.folder, self.requests = folder, []
        self._quiet = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                server.requests.append(self.path)
                kind, _, name = self.path.partition("?")[0].lstrip("/").partition("/")
                file = server.folder / name
                if kind == "silent":
                    server._quiet.wait(3)
                    return
                if kind == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", str(file.stat().st_size))
                    self.end_headers()
                    while not server._quiet.wait(0.05):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    return
                if kind not in ("files", "truncated") or not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data if kind == "files" else data[: len(data) // 2])

            def log_message(self, *args):
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, name="model-server")
        self._thread.start()

    def stop(self) -> None:
        self._quiet.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server(model_home, tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(model_home / "resnet18-test.pth", folder / "resnet18-test.pth")
    # Built-in names with the wrong content: what a bad mirror would serve.
    shutil.copy(model_home / "resnet18-test.pth", folder / "resnet18-f37072fd.pth")
    shutil.copy(model_home / "rembg" / "custom" / "mask.onnx", folder / "u2net.onnx")
    running = ModelServer(folder)
    yield running
    running.stop()


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty model caches: nothing is found until it is fetched."""
    home = tmp_path / "caches"
    for name, folder in (("TORCH_HOME", "torch"), ("REMBG_HOME", "rembg"),
                         ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(home / folder))
    return home


def weights_by_url(workspace, url: str, digest: str, **models) -> None:
    workspace.write_config(resnet18={"weights": url, "weights_sha256": digest},
                           models={"fetch": True, "timeout_seconds": 2.0, **models})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_a_url_in_the_config_is_fetched_once_then_works_with_the_server_stopped(
        workspace, catalogue, server, caches, run_cli, model_home):
    digest = sha256(model_home / "resnet18-test.pth")
    weights_by_url(workspace, f"{server.url}/files/resnet18-test.pth", digest)
    workspace.add_catalogue(catalogue, 3)
    result = run_cli("index")
    assert result.exit_code == 0, result.output
    assert f"fetching resnet18-test.pth from {server.url}/files/resnet18-test.pth" in result.output
    assert "3 embedded" in result.output
    fetched = caches / "cache" / "lookalike" / "models" / digest[:16] / "resnet18-test.pth"
    assert sha256(fetched) == digest and leftovers(fetched.parent) == ["resnet18-test.pth"]

    server.stop()
    (workspace.images / "item00.jpg").unlink()
    result = run_cli("index")
    assert result.exit_code == 0 and "1 removed" in result.output
    assert "fetching" not in result.output


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_a_mirror_is_used_instead_of_upstream(workspace, server, caches, run_cli, model_home,
                                              scheme):
    digest = sha256(model_home / "resnet18-test.pth")
    mirror = f"{server.url}/files/" if scheme == "http" else server.folder.as_uri() + "/"
    weights_by_url(workspace, f"{server.url}/gone/resnet18-test.pth", digest, mirror=mirror)
    result = run_cli("models", "--fetch", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.output[result.output.index("["):])[1]
    assert row["source"] == mirror + "resnet18-test.pth"
    assert row["sha256"] == digest and row["matches_pin"] is True
    assert not any(path.startswith("/gone/") for path in server.requests)


@pytest.mark.parametrize(("table", "file", "algorithm"), [
    ({"resnet18": {"weights": "imagenet"}}, "torch/hub/checkpoints/resnet18-f37072fd.pth",
     "sha256 f37072fd"),
    ({"auto": {"model_path": "", "model": "u2net"}}, "rembg/models/u2net/u2net.onnx",
     "md5 60024c5c889badc19c04ad937298a77b"),
])
def test_a_built_in_file_with_the_wrong_content_is_refused_by_its_pin(
        workspace, server, caches, run_cli, table, file, algorithm):
    workspace.write_config(models={"fetch": True, "mirror": f"{server.url}/files/"}, **table)
    result = run_cli("models", "--fetch")
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {server.url}/files/{Path(file).name}: expected {algorithm}, "
                           "received ") and line.endswith("; nothing was kept")
    assert leftovers((caches / file).parent) == []  # nothing a later run would load


@pytest.mark.parametrize(("path", "reason"), [
    ("truncated", "bytes, 23,418,150 more expected"),  # the server hangs up halfway
    ("files/missing.pth", "404 Not Found"),
    ("silent", "no answer within 2 s ([models] timeout_seconds)"),
    ("trickle", "slower than 32 KiB/s"),  # before: never given up
])
def test_a_broken_transfer_is_one_line_and_leaves_nothing(workspace, server, caches, run_cli,
                                                          model_home, path, reason):
    digest = sha256(model_home / "resnet18-test.pth")
    url = f"{server.url}/{path}" + ("" if path.endswith(".pth") else "/resnet18-test.pth")
    weights_by_url(workspace, url, digest)
    started = time.monotonic()
    result = run_cli("index")
    assert result.exit_code == 1 and time.monotonic() - started < 30, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: cannot fetch {url}: ") and line.endswith(reason), (
        result.output)
    assert leftovers(caches / "cache" / "lookalike" / "models" / digest[:16]) == []
    assert not stored(workspace)


def test_offline_never_touches_the_network(workspace, catalogue, server, caches, run_cli,
                                           model_home):
    digest = sha256(model_home / "resnet18-test.pth")
    weights_by_url(workspace, f"{server.url}/files/resnet18-test.pth", digest)
    result = run_cli("query", str(catalogue / "item00.jpg"), "--offline")
    assert result.exit_code == 1 and server.requests == []
    assert result.output.strip().splitlines() == [
        f"Error: ResNet-18 weights not found at "
        f"{caches / 'cache' / 'lookalike' / 'models' / digest[:16] / 'resnet18-test.pth'}: "
        "set [resnet18] weights to a ResNet-18 state dict, or to \"imagenet\""]


def test_fetched_to_a_folder_then_found_there_on_a_machine_without_network(
        workspace, catalogue, server, caches, run_cli, model_home, tmp_path):
    digest = sha256(model_home / "resnet18-test.pth")
    weights_by_url(workspace, f"{server.url}/files/resnet18-test.pth", digest)
    carried = tmp_path / "carried"
    result = run_cli("models", "--fetch", "--to", str(carried))
    assert result.exit_code == 0, result.output
    assert leftovers(carried) == ["mask.onnx", "resnet18-test.pth"]

    server.stop()  # the air-gapped machine: no server, empty caches, [models] dir
    shutil.rmtree(caches, ignore_errors=True)
    weights_by_url(workspace, f"{server.url}/files/resnet18-test.pth", digest,
                   dir=str(carried), fetch=False)
    workspace.add_catalogue(catalogue, 2)
    result = run_cli("index")
    assert result.exit_code == 0 and "2 embedded" in result.output, result.output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_a_download_leaves_no_partial_file(workspace, server, caches, model_home,
                                                         signum):
    digest = sha256(model_home / "resnet18-test.pth")
    weights_by_url(workspace, f"{server.url}/silent/resnet18-test.pth", digest,
                   timeout_seconds=30.0)
    folder = caches / "cache" / "lookalike" / "models" / digest[:16]
    fetching = subprocess.Popen([LOOKALIKE, "models", "--fetch", "--config",
                                 str(workspace.config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not leftovers(folder):  # the partial file exists while the server keeps silent
        assert time.monotonic() < deadline and fetching.poll() is None
        time.sleep(0.1)
    fetching.send_signal(signum)  # SIGTERM before: the .partial file stayed
    assert fetching.wait(timeout=30) != 0
    assert leftovers(folder) == []


def test_a_mirror_that_never_ends_is_refused_and_leaves_nothing(workspace, caches, run_cli,
                                                                model_home, tmp_path):
    digest = sha256(model_home / "resnet18-test.pth")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "resnet18-test.pth").symlink_to("/dev/zero")  # before: it filled the disk
    weights_by_url(workspace, "https://example.invalid/resnet18-test.pth", digest,
                   mirror=mirror.as_uri() + "/")
    result = run_cli("models", "--fetch")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].endswith(
        "mirror/resnet18-test.pth is not a regular file")
    assert leftovers(caches / "cache" / "lookalike" / "models" / digest[:16]) == []


@pytest.mark.parametrize("mask", [0o002, 0o022])
def test_fetched_files_get_the_mode_the_umask_gives(workspace, server, caches, model_home,
                                                    tmp_path, mask):
    digest = sha256(model_home / "resnet18-test.pth")
    weights_by_url(workspace, f"{server.url}/files/resnet18-test.pth", digest)
    carried = tmp_path / "carried"
    result = subprocess.run(
        ["sh", "-c", f'umask {mask:03o} && exec "$@"', "sh", LOOKALIKE, "models", "--fetch",
         "--to", str(carried), "--config", str(workspace.config)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for path in (carried / "resnet18-test.pth", carried / "mask.onnx"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path  # before: 0600


def test_an_unwritable_cache_is_one_line(workspace, server, caches, run_cli, model_home,
                                         monkeypatch, tmp_path):
    digest = sha256(model_home / "resnet18-test.pth")
    weights_by_url(workspace, f"{server.url}/files/resnet18-test.pth", digest)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    result = run_cli("models", "--fetch")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1:] == [
        f"Error: cannot fetch {server.url}/files/resnet18-test.pth: cannot make the folder "
        f"{blocker / 'lookalike' / 'models' / digest[:16]}: Not a directory"]


def test_credentials_in_a_model_url_are_never_shown(workspace, server, caches, run_cli,
                                                    model_home):
    digest = sha256(model_home / "resnet18-test.pth")
    host = server.url.removeprefix("http://")
    url = f"http://reader:s3cret@{host}/files/resnet18-test.pth?token=abc123&v=2"
    weights_by_url(workspace, url, digest)
    fetched = run_cli("models", "--fetch", "--json")
    assert fetched.exit_code == 0, fetched.output
    assert f"from http://***@{host}/files/resnet18-test.pth?token=***&v=2" in fetched.output
    broken = url.replace("/files/", "/missing/")
    weights_by_url(workspace, broken, "0" * 64)
    failed = run_cli("models", "--fetch")
    assert failed.exit_code == 1 and "***@" in failed.output
    for output in (fetched.output, failed.output):
        assert "s3cret" not in output and "abc123" not in output


def test_onnx_models_run_on_the_providers_this_build_has(workspace, catalogue, run_cli):
    import onnxruntime

    assert "CUDAExecutionProvider" not in onnxruntime.get_available_providers()  # a CPU build
    result = run_cli("models")
    assert result.exit_code == 0, result.output
    assert "ONNX models run on: CPUExecutionProvider" in result.output  # "auto" here
    workspace.add_catalogue(catalogue, 1)
    workspace.write_config(onnxruntime={"providers": "CUDAExecutionProvider"})
    refused = ("Error: [onnxruntime] providers: CUDAExecutionProvider not in this onnxruntime "
               "build, which has " + ", ".join(onnxruntime.get_available_providers()))
    for command in ("models", "index"):  # listing the files first; refusing to embed
        result = run_cli(command)
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == refused
    assert stored(workspace) == {}
    workspace.write_config(onnxruntime={"providers": "gpu"})
    result = run_cli("status")
    assert result.exit_code == 1 and "onnxruntime.providers must be \"auto\"" in result.output
