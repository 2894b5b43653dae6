"""The HTTP API: a real `lookalike run` process answering over loopback, shared by the module."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import Workspace
from prometheus_client.parser import text_string_to_metric_families
from test_pipeline import encode
from test_reliability import OutOfMemoryOnce

from builders import cropped_query, png_header_only, product_photo
from lookalike.api.app import App
from lookalike.api.catalogue import Catalogue
from lookalike.daemon.ingest_queue import IngestQueue
from lookalike.daemon.settings import HttpSettings
from lookalike.daemon.status import StatusReporter
from lookalike.web.metrics import Metrics
from lookalike.web.server import serving
from running import RunningService, free_port, lookalike, stored

pytestmark = pytest.mark.slow

TOKEN = "test-token-3f9a"
UPLOAD_LIMIT = 200_000
DEADLINE = 3.0


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_home, catalogue):
    """The module's service: six images indexed, HTTP on a loopback port with a token."""
    workspace = Workspace(tmp_path_factory.mktemp("http"), model_home)
    workspace.images.mkdir()
    port = free_port()
    workspace.write_config(http={"listen": f"127.0.0.1:{port}", "token": TOKEN,
                                 "max_upload_bytes": UPLOAD_LIMIT,
                                 "request_timeout_seconds": DEADLINE,
                                 "max_concurrent_embeddings": 1})
    workspace.add_catalogue(catalogue, 6)
    service = RunningService(workspace)
    try:
        service.wait_for(lambda: len(stored(workspace)) == 6, "6 images indexed")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            service.wait_for(lambda: client.get("/similar", params={"path": "item05.jpg"})
                             .status_code == 200, "the index to hold every image")
            yield workspace, service, client
    finally:
        service.kill()


def photo_bytes(seed: int) -> bytes:
    return encode(cropped_query(product_photo(seed)), "JPEG")


def test_every_route_answers(served):
    workspace, _, client = served
    assert httpx.get(f"{client.base_url}/healthz").json() == {"status": "ok"}  # no token

    answer = client.post("/query", params={"k": 3}, content=photo_bytes(2)).json()
    assert answer["neighbours"][0]["path"] == "item02.jpg" and answer["k"] == 3
    assert len(answer["neighbours"]) == 3 and answer["index_size"] == 6
    multipart = client.post("/query", files={"image": ("shopper.jpg", photo_bytes(4))}).json()
    assert multipart["query"] == "shopper.jpg"
    assert multipart["neighbours"][0]["path"] == "item04.jpg"

    similar = client.get("/similar", params={"path": "item03.jpg", "k": 4}).json()
    assert similar["query"] == "item03.jpg" and len(similar["neighbours"]) == 4
    assert "item03.jpg" not in [n["path"] for n in similar["neighbours"]]
    cli = json.loads(lookalike(workspace, "query", "--similar", "item03.jpg", "-k", "4",
                               "--json").stdout)
    assert cli["neighbours"] == similar["neighbours"]  # one query function under both
    both = client.post("/similar", params={"k": 4}, json=["item03.jpg", "nothing.jpg"]).json()
    assert both[0]["neighbours"] == similar["neighbours"]
    assert both[1]["error"] == "not in the catalogue" and both[1]["neighbours"] == []
    missing = client.get("/similar", params={"path": "nothing.jpg"})
    assert missing.status_code == 404 and missing.json() == {"error": "not in the catalogue"}

    status = client.get("/status").json()
    assert status["indexed"] == 6 and status["nodes"][0]["live"]
    assert status["nodes"][0]["http"] == f"http://127.0.0.1:{client.base_url.port}"
    assert status["nodes"][0]["onnx_providers"] == "CPUExecutionProvider"  # "auto", no GPU
    shown = lookalike(workspace, "status").stdout
    assert f"answers HTTP on http://127.0.0.1:{client.base_url.port}" in shown
    assert "ONNX models run on CPUExecutionProvider" in shown

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    indexed = families["lookalike_images_indexed"].samples
    assert sum(sample.value for sample in indexed) == 6
    assert families["lookalike_index_images"].samples[0].value == 6
    assert families["lookalike_model_info"].samples[0].labels["model"] == answer["model"]
    assert families["lookalike_database_outages"].samples[0].value == 0
    routes = {s.labels["route"] for s in families["lookalike_request_seconds"].samples}
    assert {"/query", "/similar", "/status"} <= routes
    embedded = families["lookalike_embedding_seconds"].samples
    assert next(s.value for s in embedded if s.name.endswith("_count")) >= 8  # 6 + 2 queries

    paths = client.get("/openapi.json").json()["paths"]
    assert {"/query", "/similar", "/status", "/healthz", "/metrics"} <= set(paths)
    assert {"get", "post"} <= set(paths["/similar"])


def test_every_route_but_health_needs_the_token(served):
    _, _, client = served
    for route in ("/status", "/metrics", "/openapi.json", "/similar?path=item01.jpg"):
        refused = httpx.get(f"{client.base_url}{route}")
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        wrong = httpx.get(f"{client.base_url}{route}", headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401


def test_bad_requests_get_a_clear_answer_and_change_nothing(served):
    workspace, service, client = served
    cases = {
        "not an image": (client.post("/query", content=b"hello, not a jpeg"), 400),
        "empty": (client.post("/query", content=b""), 400),
        "pixel bomb": (client.post("/query", content=png_header_only(50_000, 50_000)), 400),
        "too large": (client.post("/query", content=b"\0" * (UPLOAD_LIMIT + 1)), 413),
        "too large, chunked": (client.post("/query", content=iter([b"\0" * 100_000] * 3)),
                               413),
        "k zero": (client.get("/similar", params={"path": "item01.jpg", "k": 0}), 400),
        "k too large": (client.post("/query", params={"k": 201}, content=photo_bytes(1)), 400),
        "no path": (client.get("/similar"), 400),
        "not a list": (client.post("/similar", json={"path": "item01.jpg"}), 400),
        "unknown route": (client.get("/nowhere"), 404),
    }
    for what, (response, status) in cases.items():
        assert response.status_code == status, (what, response.text)
        assert response.json()["error"], what
    assert "pixels" in cases["pixel bomb"][0].json()["error"]

    # A client that goes away mid-upload, and one that sends a byte a second.
    with socket.create_connection(("127.0.0.1", client.base_url.port)) as gone:
        gone.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n" + b"\xff" * 10)
    with socket.create_connection(("127.0.0.1", client.base_url.port), timeout=30) as slow:
        slow.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        started, reply = time.monotonic(), b""
        while not reply:
            slow.sendall(b"\xff")
            slow.settimeout(1)
            with contextlib.suppress(TimeoutError):
                reply = slow.recv(1000)
        assert reply.startswith(b"HTTP/1.1 408")
        assert DEADLINE - 0.5 < time.monotonic() - started < DEADLINE + 5

    # A thousand bad requests later the service still ingests and answers.
    for number in range(1000):
        client.post("/query", content=b"junk %d" % number)
    shutil.copy(sorted(workspace.images.iterdir())[0], workspace.images / "late.jpg")
    service.wait_for(lambda: "late.jpg" in stored(workspace), "the new image")
    answer = client.post("/query", content=photo_bytes(5)).json()
    assert answer["neighbours"][0]["path"] == "item05.jpg"
    assert client.get("/healthz").status_code == 200


def test_embeddings_beyond_the_pool_are_refused_with_retry_after(served):
    _, _, client = served
    data, statuses, start = photo_bytes(3), [], threading.Barrier(6)

    def ask():
        start.wait()
        response = client.post("/query", content=data)
        statuses.append((response.status_code, response.headers.get("retry-after")))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (200, None) in statuses and (503, "1") in statuses, statuses
    assert {status for status, _ in statuses} == {200, 503}


@contextmanager
def served_in_process(workspace: Workspace, fake_remover, **http) -> Iterator[tuple]:
    """The HTTP server in this process, over the workspace's catalogue with the remover
    wrapped in ``fake_remover``: the fake and a client."""
    app = App(str(workspace.config))
    remover = fake_remover(app.pipeline.remover)
    app.pipeline = replace(app.pipeline, remover=remover)
    with app.opened_store() as store:
        catalogue_api = Catalogue(app, store)
        metrics = Metrics(catalogue_api, StatusReporter(None, time.monotonic),
                          IngestQueue(workspace.images, 1))
        settings = HttpSettings(listen=f"127.0.0.1:{free_port()}", **http)
        with (serving(catalogue_api, settings, metrics, lambda: None, lambda _url: None),
              httpx.Client(base_url=f"http://{settings.listen}", timeout=30) as client):
            yield remover, client


def test_memory_running_out_while_embedding_is_503_with_retry_after(workspace, catalogue,
                                                                     run_cli):
    """The server in this process: an out-of-memory cannot be provoked safely in a real one,
    so the remover is a fake (OutOfMemoryOnce) that fails once as an allocation under load
    would. /query answers 503 with Retry-After, the machine's state and not the image's, and
    the same image is answered the next time."""
    workspace.add_catalogue(catalogue, 2)
    assert run_cli("index").exit_code == 0
    with served_in_process(workspace, OutOfMemoryOnce) as (_, client):
        first = client.post("/query", content=photo_bytes(1))
        second = client.post("/query", content=photo_bytes(1))
    assert first.status_code == 503 and first.headers["retry-after"] == "1"
    assert first.json()["error"].startswith("the image could not be embedded now (MemoryError")
    assert second.status_code == 200 and len(second.json()["neighbours"]) == 2


class HeldUntilReleased:
    """A fake remover (an embedding slow enough to overlap a request cannot be timed
    reliably): the real one, once ``released`` is set; ``holding`` is set while it waits."""

    def __init__(self, remover):
        self.remover, self.id = remover, remover.id
        self.holding, self.released = threading.Event(), threading.Event()

    def model_files(self):
        return self.remover.model_files()

    def remove(self, image):
        self.holding.set()
        self.released.wait(30)
        return self.remover.remove(image)


def test_words_asked_while_the_pool_is_full_are_refused_with_retry_after(workspace, catalogue,
                                                                         run_cli):
    """Words share the pool of embeddings with images: with the one slot held by an image
    (the fake remover above), GET /query?text= answers 503 with Retry-After; once the slot is
    free, the words are embedded (ResNet-18 has no text tower: 400 saying so)."""
    workspace.add_catalogue(catalogue, 2)
    assert run_cli("index").exit_code == 0
    with served_in_process(workspace, HeldUntilReleased,
                           max_concurrent_embeddings=1) as (remover, client):
        image = threading.Thread(target=client.post, args=("/query",),
                                 kwargs={"content": photo_bytes(1)})
        image.start()
        assert remover.holding.wait(30)
        busy = client.get("/query", params={"text": "a red dress"})
        remover.released.set()
        image.join()
        free = client.get("/query", params={"text": "a red dress"})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"] == ("[http] max_concurrent_embeddings = 1 queries are being "
                                    "embedded already: try again shortly")
    assert free.status_code == 400 and "text" in free.json()["error"]


def test_a_public_address_needs_a_token(workspace, run_cli):
    workspace.write_config(http={"listen": f"0.0.0.0:{free_port()}"})
    result = run_cli("run")
    assert result.exit_code == 1
    assert "is not a loopback address: set [http] token" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert HttpSettings(listen="[::1]:8765").refusal() is None
    assert HttpSettings(listen="localhost:8765").refusal() is None
    assert HttpSettings(listen="10.0.0.5:8765", token="t").refusal() is None


def test_the_readme_examples_run_as_printed(workspace, catalogue, service_factory):
    """The README's curl lines, on loopback without a token, as a user would paste them."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("## Over HTTP", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    workspace.write_config(http={"listen": "127.0.0.1:8765"})
    (workspace.images / "tops").mkdir()
    workspace.add_catalogue(catalogue, 4)
    shutil.copy(catalogue / "item05.jpg", workspace.images / "tops" / "12345.jpg")
    (workspace.root / "shopper.jpg").write_bytes(photo_bytes(5))
    service = service_factory()
    service.wait_for(lambda: len(stored(workspace)) == 5, "5 images indexed")
    outputs = []
    for line in block.strip().splitlines():
        done = subprocess.run(["bash", "-c", line.split("  #")[0] + " --fail-with-body"],
                              cwd=workspace.root, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        outputs.append(done.stdout)
    similar, query, multipart, health, metrics = outputs
    assert json.loads(similar)["query"] == "tops/12345.jpg"
    assert json.loads(query)["neighbours"][0]["path"] == "tops/12345.jpg"
    assert json.loads(multipart)["query"] == "shopper.jpg"
    assert json.loads(health) == {"status": "ok"}
    assert "lookalike_images_indexed" in metrics
